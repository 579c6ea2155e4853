#!/usr/bin/env bash
# Sets up a fresh Debian machine to run the test-suite: the system packages the
# tests run for real (a registry, htpasswd, etcd, skopeo/umoci and containerd's
# Go source for the runtime oracle, wrk for the benchmark, the Go toolchain that
# builds the kube-apiserver and the kubelet, containerd + runc + busybox-static
# and a static libc for the node tier), a virtualenv in .venv with the project and its
# test extras, and Helm in .venv/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
packages=(docker-registry etcd-server golang-go make rsync dpkg-dev openssl python3-venv ca-certificates
          apache2-utils skopeo umoci golang-github-containerd-containerd-dev wrk zstd unzip
          containerd runc busybox-static gcc libc6-dev iptables)
command -v kubectl >/dev/null || packages+=(kubernetes-client)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the packaged services on install where it can; the tests run their own.
# The node tier runs its own containerd (own config, root, state and socket).
$SUDO systemctl disable --now docker-registry etcd containerd >/dev/null 2>&1 || true

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
scripts/install-helm.sh .venv/bin
