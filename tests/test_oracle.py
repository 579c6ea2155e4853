"""The node as oracle: containerd 1.6's own ``oci.WithUser`` on the unpacked image must agree with us.

Each test image is copied out of the loopback registry with skopeo (layers
recompressed as gzip, since umoci 0.4 reads no zstd: the tar inside is unchanged), unpacked
with ``umoci raw unpack --rootless``, and handed to a few lines of Go that call
containerd's ``oci.WithUser(USER)`` with the unpacked directory as the spec's
root (the path ``WithUser`` takes when a container has no snapshotter), exactly
as the CRI plugin calls it for an image's USER. The harness is built once,
offline, from the containerd source Debian ships, and cached under
``~/.cache/nonroot-mutator/oracle/``.

Agreement means: the same uid (and gid, when we set one), or both refusing.
Where we knowingly differ the case says why (see ``Case.oracle_differs``).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from mutator.config import from_mapping
from mutator.decide.images import ImageUser, Resolution
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver
from tests.support import gobuild, rootfs_images
from tests.support.images import Blob, Pusher, encode, layer, passwd
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry

GOCODE = Path("/usr/share/gocode")
CONTAINERD = GOCODE / "src/github.com/containerd/containerd/oci/spec_opts.go"
HARNESS = """package main

// Prints the uid and gid containerd's CRI plugin gives a container whose image says USER argv[2],
// for the image root filesystem unpacked at argv[1]; exit 3 with the error when containerd refuses.
import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func main() {
	root, user := os.Args[1], os.Args[2]
	s := &oci.Spec{Root: &specs.Root{Path: root}, Linux: &specs.Linux{}, Process: &specs.Process{}}
	if user != "" { // the CRI plugin only applies WithUser to a non-empty USER
		if err := oci.WithUser(user)(context.Background(), nil, &containers.Container{}, s); err != nil {
			fmt.Printf("error: %v\\n", err)
			os.Exit(3)
		}
	}
	fmt.Printf("%d %d\\n", s.Process.User.UID, s.Process.User.GID)
}
"""
TOOLS = {"skopeo": "skopeo", "umoci": "umoci", "go": "golang-go"}


@pytest.fixture(scope="session")
def oracle() -> Path:
    """The Go harness, built offline once (keyed by its source and containerd's)."""
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not CONTAINERD.is_file():
        missing.append("golang-github-containerd-containerd-dev")
    if missing:
        pytest.fail(f"the oracle needs {' '.join(missing)}: run scripts/setup.sh")
    try:
        return gobuild.build(HARNESS, name="withuser", cache="oracle", gopath=[GOCODE],
                             built_from=CONTAINERD.read_bytes())
    except gobuild.GoBuildError as exc:
        pytest.fail(str(exc))


def node_answer(oracle: Path, image: str, user: str, work: Path) -> tuple[int, int] | str:
    """(uid, gid) as the node sets them, or containerd's (or the pull's) error."""
    layout = work / "layout"
    copied = subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--override-os", "linux",
         "--override-arch", "amd64", "--dest-compress", "--dest-compress-format", "gzip",
         f"docker://{image}", f"oci:{layout}:x"],
        capture_output=True, text=True, timeout=120,
    )
    if copied.returncode != 0:
        return f"pull: {copied.stderr.strip()}"
    rootfs = work / "rootfs"
    unpacked = subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:x", str(rootfs)],
                              capture_output=True, text=True, timeout=120)
    if unpacked.returncode != 0:
        return f"unpack: {unpacked.stderr.strip()}"
    try:
        ran = subprocess.run([str(oracle), str(rootfs), user], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return "hangs reading /etc/passwd"  # a FIFO: the container would never start
    if ran.returncode != 0:
        return ran.stdout.strip() or ran.stderr.strip()
    uid, gid = ran.stdout.split()
    return int(uid), int(gid)


@pytest.fixture
async def resolver(registry: RegistryServer) -> AsyncIterator[Resolver]:
    config = from_mapping({"registries": {registry.host: {"plain_http": True}}})
    async with aiohttp.ClientSession() as session:
        yield Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)


def hostile(pusher: Pusher) -> list[tuple[str, str, str | None]]:
    """Hostile layers the node can be asked about cheaply (bombs and 100 MB files are left out)."""
    base = layer({"etc/passwd": passwd(("app", 3000, 3000))})
    cut = layer({"etc/passwd": passwd(("app", 3200, 3200)), "srv/data": bytes(64 * 1024)}, compress=False
                ).data[:8192]
    shapes = {
        "fifo-passwd": ([base, layer(special={"etc/passwd": tarfile.FIFOTYPE})], None),
        "no-end-marker": ([layer({"etc/passwd": passwd(("app", 3100, 3100))}, end_marker=False)], None),
        "truncated-after-passwd": ([encode(cut)], "a tar cut short after /etc/passwd is read as far as it "
                                   "goes; the node cannot unpack it at all, so the Pod never starts"),
    }
    subjects = [(name, pusher.image(f"oracle/{name}", "v1", user="app", layers=layers).reference, differs)
                for name, (layers, differs) in shapes.items()]
    # Where we are stricter than containerd 1.6 on purpose (ids the API server would refuse, or that
    # containerd wraps or reads as names): the node answers, we refuse.
    stricter = {
        "uid-over-int32": ("app", b"app:x:3000000000:3000::/:/bin/sh\n",
                           "containerd takes uid 3000000000, which no Pod may carry (0..2147483647)"),
        "uid-wrapping-to-root": ("app", b"app:x:4294967296:0::/:/bin/sh\n",
                                 "containerd casts 4294967296 to 32 bits: uid 0, root"),
        "digits-user-as-name": ("2147483648", b"2147483648:x:0:0::/:/bin/sh\n",
                                "containerd 1.6 looks an out-of-range number up as a name (here root)"),
    }
    subjects += [(name, pusher.image(f"oracle/{name}", "v1", user=user,
                                     layers=[layer({"etc/passwd": content})]).reference, differs)
                 for name, (user, content, differs) in stricter.items()]
    return subjects


@pytest.fixture(scope="module")
def subjects(pusher: Pusher, images: dict[str, str]) -> Iterator[list[tuple[str, str, str | None]]]:
    """(name, reference, why the oracle differs) for every image it can copy."""
    mine = [case for case in rootfs_images.cases() if case.oracle_skip is None]
    pushed = rootfs_images.push_all(pusher, mine)
    yield ([(name, ref, None) for name, ref in images.items()]
           + [(case.name, pushed[case.name], case.oracle_differs) for case in mine]
           + hostile(pusher))


def compare(ours: Resolution, node: tuple[int, int] | str) -> tuple[bool, str]:
    """Whether we and the node agree (same ids, or both refusing), and our answer in words."""
    if isinstance(ours, ImageUser) and ours.uid is not None:
        if not isinstance(node, tuple):
            return False, f"{(ours.uid, ours.gid)}"
        # A numeric USER with no group leaves the gid to the runtime (we patch no runAsGroup).
        return ours.uid == node[0] and ours.gid in (None, node[1]), f"{(ours.uid, ours.gid)}"
    reason = ours.problem if isinstance(ours, ImageUser) else ours.message
    return isinstance(node, str), f"refused: {reason}"


async def test_the_node_agrees(oracle, subjects, resolver, tmp_path):
    rows = []
    disagreements = []
    for name, image, differs in subjects:
        ours = await resolver.lookup(image)
        user = ours.user if isinstance(ours, ImageUser) else ""
        work = tmp_path / name
        work.mkdir()
        node = await asyncio.to_thread(node_answer, oracle, image, user, work)
        agree, mine = compare(ours, node)
        rows.append(f"{name:28} {user!r:14} ours={mine:60.60} node={node!s:50.50} "
                    f"{'agree' if agree else 'DIFFER: ' + (differs or '?')}")
        if agree == (differs is not None):
            disagreements.append(rows[-1])
    print("\n" + "\n".join(rows))
    assert not disagreements, "\n".join(disagreements)
    assert len(rows) >= 40


NAMES = ("etc", "usr", "x")
SEED, STACKS = int(os.environ.get("FUZZ_SEED", 20261123)), int(os.environ.get("FUZZ_STACKS", 30))


def random_layer(rng: random.Random, index: int) -> Blob:
    """A layer of a few entries on a tiny namespace, shaped as image builders write them."""
    entries: dict[str, tuple[str, str]] = {}
    for _ in range(rng.randint(1, 4)):
        depth = rng.randint(1, 3)
        path = "/".join([*rng.choices(NAMES, k=depth - 1), rng.choice((*NAMES, "passwd", "passwd"))])
        kind = rng.choice(("file", "file", "link", "link", "hardlink", "whiteout", "opaque"))
        if kind == "link":
            target = "/".join(rng.choices((*NAMES, "passwd", ".."), k=rng.randint(1, 3)))
            entries[path] = ("link", ("/" if rng.random() < 0.4 else "") + target)
        else:
            entries[path] = (kind, "")
    # No entry below a non-directory of the same layer (the unpacker could not write it).
    solid = {p for p, (k, _) in entries.items() if k != "opaque"}
    entries = {p: e for p, e in entries.items() if not any(p.startswith(s + "/") for s in solid)}
    files = {p: passwd(("app", 1000 + 10 * index + i, 7)) for i, (p, (k, _)) in enumerate(entries.items())
             if k == "file"}
    # A hardlink names an entry written before it in the same layer (as builders write them).
    targets = [*files, *(q for q, (k, _) in entries.items() if k == "link")]
    hardlinks = {p: rng.choice(targets) for p, (k, _) in entries.items() if k == "hardlink" and targets}
    return layer(files, hardlinks=hardlinks, symlinks={p: t for p, (k, t) in entries.items() if k == "link"},
                 whiteouts=[p for p, (k, _) in entries.items() if k == "whiteout"],
                 opaque=[p for p, (k, _) in entries.items() if k == "opaque"])


async def test_the_node_agrees_on_random_layer_stacks(oracle, pusher, resolver, tmp_path):
    """Seeded random stacks of files, links, whiteouts and opaque directories over a tiny tree."""
    rng = random.Random(SEED)
    disagreements, resolved = [], 0
    for n in range(STACKS):
        layers = [random_layer(rng, i) for i in range(rng.randint(1, 4))]
        image = pusher.image(f"fuzz/stack{n}", "v1", user="app", layers=layers).reference
        ours = await resolver.lookup(image)
        work = tmp_path / str(n)
        work.mkdir()
        node = await asyncio.to_thread(node_answer, oracle, image, "app", work)
        agree, mine = compare(ours, node)
        resolved += isinstance(node, tuple)
        if not agree:
            disagreements.append(f"stack {n} (seed {SEED}): ours={mine} node={node}")
    assert not disagreements, "\n".join(disagreements)
    assert resolved >= 3  # the stacks reach a passwd often enough to prove something
