"""Images the node really runs: Debian's busybox-static as /bin/busybox under each test's own layers.

The busybox layer is the lowest one and holds nothing under /etc, so every image's USER, /etc/passwd
and /etc/group are exactly those of its own layers (the resolver tests' layers, for the corpus).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tests.support import rootfs_images
from tests.support.images import Blob, Pusher, encode, group, layer, passwd

BUSYBOX = Path("/bin/busybox")


@cache
def busybox_layer() -> Blob:
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing (apt: busybox-static)")
    data = BUSYBOX.read_bytes()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("bin")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        binary = tarfile.TarInfo("bin/busybox")
        binary.size, binary.mode = len(data), 0o755
        tar.addfile(binary, io.BytesIO(data))
        shell = tarfile.TarInfo("bin/sh")
        shell.type, shell.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(shell)
    return encode(raw.getvalue())


@dataclass(frozen=True)
class Runnable:
    """An image the tier pushes: its USER and the ids the image's own files give that USER."""

    name: str
    user: str | None
    layers: tuple[Blob, ...]
    uid: int | None = None  # None: root, or refused on purpose
    gid: int | None = None


def seeds() -> list[Runnable]:
    """The images of the seed's failure, one per USER shape we patch, plus the root ones we refuse."""
    app = layer({"etc/passwd": passwd(("app", 1201, 1202)), "etc/group": group(("app", 1202), ("staff", 53))})
    return [
        Runnable("named", "app", (app,), 1201, 1202),
        Runnable("name-group", "app:staff", (app,), 1201, 53),
        Runnable("name-gid", "app:4243", (app,), 1201, 4243),
        # The user is defined by the middle of three layers; the upper one only adds files.
        Runnable("middle-layer", "web", (
            layer({"etc/passwd": passwd(), "etc/group": group()}),
            layer({"etc/passwd": passwd(("web", 1301, 1302)), "etc/group": group(("web", 1302))}),
            layer({"srv/www/index.html": b"hi\n"})), 1301, 1302),
        Runnable("no-user", None, (app,)),
        Runnable("uid-zero", "0", (app,)),
        Runnable("user-root", "root", (app,)),
        Runnable("name-to-root", "toor", (layer({"etc/passwd": passwd(("toor", 0, 0))}),)),
    ]


def refused_on_purpose() -> list[Runnable]:
    """USERs we refuse although the node would start them: the tests show what the node does instead."""
    return [
        # A uid past 2147483647 in the passwd line of a name.
        Runnable("uid-past-int32", "app",
                 (layer({"etc/passwd": b"root:x:0:0\napp:x:4294967296:1000::/:/bin/sh\n"}),)),
        # A digits-only USER that is out of range, defined as a *name* in /etc/passwd.
        Runnable("digits-as-name", "4294967296", (layer({"etc/passwd": b"4294967296:x:0:0::/:/bin/sh\n"}),)),
        Runnable("name-to-root", "toor", (layer({"etc/passwd": passwd(("toor", 0, 0))}),)),
    ]


def corpus() -> list[rootfs_images.Case]:
    """The resolver tests' images that containerd can pull and unpack, and that resolve to a uid."""
    return [case for case in rootfs_images.cases()
            if case.uid is not None and case.oracle_skip is None and case.oracle_differs is None
            and not case.user.isdigit()]


def push(pusher: Pusher, repository: str, user: str | None, layers: tuple[Blob, ...]) -> str:
    """Push with busybox as the lowest layer; the command the Pods run is /bin/busybox."""
    return pusher.image(repository, "v1", user=user, layers=(busybox_layer(), *layers)).reference
