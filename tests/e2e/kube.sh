#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 components from Debian's own `kubernetes` source
# package, once each, into a cache directory outside the repo, and prints the
# directory holding the binaries. The components are the arguments (default:
# kube-apiserver kube-controller-manager; the node tier adds kubelet); only the
# missing ones are built, and the source and Go build cache are shared.
#
# Why from source: there is no container engine on the test machines (no kind,
# no k3d), and Debian ships the API server only as source. A cold build takes
# ~9 minutes on 2 cores and ~2.5 GB of disk; later runs reuse the cache.
#
# Needs: golang-go make rsync dpkg-dev (apt), run as a user that may call apt-get.
set -euo pipefail

VERSION=1.20.2
CACHE=${MUTATOR_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nonroot-mutator/kube-v$VERSION}
BIN=$CACHE/bin

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(kube-apiserver kube-controller-manager)
missing=()
for component in "${components[@]}"; do
    case $component in
        kube-apiserver|kube-controller-manager|kubelet) ;;
        *) echo "kube.sh: unknown component $component" >&2; exit 2 ;;
    esac
    [[ -x $BIN/$component ]] || missing+=("$component")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$BIN"
    exit 0
fi

log() { echo "kube.sh: $*" >&2; }
mkdir -p "$CACHE"
APT=$CACHE/apt
mkdir -p "$APT/sources.list.d" "$APT/lists/partial" "$APT/archives/partial"

# A private apt configuration whose deb-src entries are the machine's own
# sources with the type switched, so the system's apt setup stays untouched.
: > "$APT/sources.list"
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        > "$APT/sources.list.d/debian.sources"
fi
if [[ -f /etc/apt/sources.list ]]; then
    sed -nE 's/^deb[[:space:]]+/deb-src /p' /etc/apt/sources.list > "$APT/sources.list"
fi
apt_opts=(
    -o "Dir::Etc::sourcelist=$APT/sources.list"
    -o "Dir::Etc::sourceparts=$APT/sources.list.d"
    -o "Dir::State::Lists=$APT/lists"
    -o "Dir::Cache::archives=$APT/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
)

SRC=$CACHE/src
if [[ ! -f $SRC/.extracted ]]; then
    log "fetching Debian's kubernetes source package"
    apt-get "${apt_opts[@]}" -qq update
    rm -rf "$CACHE/dl" "$SRC"
    mkdir -p "$CACHE/dl"
    (cd "$CACHE/dl" && apt-get "${apt_opts[@]}" -qq source --download-only kubernetes)
    dsc=$(ls "$CACHE"/dl/kubernetes_*.dsc | head -n 1)
    dpkg-source --no-check -x "$dsc" "$SRC" >/dev/null
    grep -q "gitVersion.*v$VERSION\|$VERSION" "$SRC/debian/changelog"

    # The vendored reflect2 v1.0.1 breaks at run time with Go >= 1.18; Debian's
    # 1.0.2 fixes it, so its .go and .s files replace the vendored ones.
    log "replacing vendored modern-go/reflect2 with Debian's 1.0.2"
    mkdir -p "$CACHE/reflect2"
    (cd "$CACHE/reflect2" && apt-get -qq download golang-github-modern-go-reflect2-dev \
        && dpkg-deb -x golang-github-modern-go-reflect2-dev_*.deb root)
    fixed=$CACHE/reflect2/root/usr/share/gocode/src/github.com/modern-go/reflect2
    vendored=$SRC/vendor/github.com/modern-go/reflect2
    rm -f "$vendored"/*.go "$vendored"/*.s
    cp "$fixed"/*.go "$vendored"/
    cp "$fixed"/*.s "$vendored"/ 2>/dev/null || true
    touch "$SRC/.extracted"
fi

# Cold, on 2 cores: ~9 minutes for the API server and controller manager, about one more for the kubelet
# (most of its packages are shared with them).
export GOPROXY=off CGO_ENABLED=0 GOCACHE=$CACHE/go-build GOFLAGS=
mkdir -p "$BIN"
for component in "${missing[@]}"; do
    log "building $component"
    (cd "$SRC" && make WHAT="cmd/$component" >&2)
    # Copied under a temporary name and renamed, so a binary in the cache is always a whole one.
    cp "$SRC"/_output/local/bin/linux/*/"$component" "$BIN/.$component.tmp"
    mv "$BIN/.$component.tmp" "$BIN/$component"
done
echo "$BIN"
