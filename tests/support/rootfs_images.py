"""Images whose /etc/passwd is reached through links, odd layer shapes and odd entry names.

Shared by the layer-scan tests and the containerd oracle: each case says what
the node resolves (``uid``/``gid``) or why it cannot (``problem``).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support.images import DOCKER_CONFIG, OCI_CONFIG, OCI_MANIFEST, Blob, Pusher, layer, passwd

FOREIGN_DOCKER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


@dataclass(frozen=True)
class Case:
    name: str
    user: str
    layers: tuple[Blob, ...]
    uid: int | None = None
    gid: int | None = None
    problem: str | None = None  # a fragment of the reason when uid is None
    user_layer: int | None = None  # index of the layer whose passwd defines the user
    media_types: tuple[str | None, ...] = ()  # per layer: None keeps the blob's, "" omits mediaType
    # Why the oracle (skopeo + umoci unpack + containerd's WithUser) sees something else, if it does.
    oracle_differs: str | None = None
    oracle_skip: str | None = None  # why the oracle cannot copy this image at all


def raw(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, link: str = ""
        ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info, data


def _pw(uid: int, gid: int | None = None, name: str = "app") -> bytes:
    return passwd((name, uid, uid if gid is None else gid))


BASE = "usr/share/base/passwd"
HARDLINK_NOTE = ("umoci links to the target in the whole unpacked tree; containerd's overlayfs "
                 "applier links inside the layer's own directory, where the target is missing, and "
                 "fails to unpack the layer")


def cases() -> list[Case]:
    return [
        Case("link-relative", "app", (layer({BASE: _pw(1100)}),
                                      layer(symlinks={"etc/passwd": "../usr/share/base/passwd"})),
             uid=1100, gid=1100, user_layer=0),
        Case("link-absolute", "app", (layer({BASE: _pw(1101)}, symlinks={"etc/passwd": "/" + BASE}),),
             uid=1101, gid=1101, user_layer=0),
        Case("link-escaping", "app",
             (layer({BASE: _pw(1102)}, symlinks={"etc/passwd": "../../../../../../usr/share/base/passwd"}),),
             uid=1102, gid=1102, user_layer=0),
        Case("link-chain", "app",
             (layer({"opt/c": _pw(1103)}), layer(symlinks={"opt/b": "c"}),
              layer(symlinks={"opt/a": "/opt/b", "etc/passwd": "../opt/a"})),
             uid=1103, gid=1103, user_layer=0),
        Case("link-target-replaced", "app",
             (layer({BASE: _pw(1)}, symlinks={"etc/passwd": "/" + BASE}), layer({BASE: _pw(1104)})),
             uid=1104, gid=1104, user_layer=1),
        Case("link-shadowed", "app",
             (layer({BASE: _pw(2)}, symlinks={"etc/passwd": "/" + BASE}), layer({"etc/passwd": _pw(1105)})),
             uid=1105, gid=1105, user_layer=1),
        Case("etc-symlinked", "app",
             (layer({"usr/etc/passwd": _pw(1200)}, symlinks={"etc": "usr/etc"}), layer({"srv/x": b"x"})),
             uid=1200, gid=1200, user_layer=0),
        Case("etc-symlinked-absolute", "app",
             (layer({"usr/etc/passwd": _pw(1201)}), layer(symlinks={"etc": "/usr/etc"})),
             uid=1201, gid=1201, user_layer=0),
        Case("hardlink", "app", (layer({BASE: _pw(1300)}, hardlinks={"etc/passwd": BASE}),),
             uid=1300, gid=1300, user_layer=0),
        Case("link-loop", "app", (layer(symlinks={"etc/passwd": "/etc/shadow", "etc/shadow": "passwd"}),),
             problem="too many levels of symbolic links"),
        Case("link-to-itself", "app", (layer(symlinks={"etc/passwd": "../../etc/passwd"}),),
             problem="too many levels of symbolic links"),
        Case("link-target-deleted", "app",
             (layer({BASE: _pw(3)}, symlinks={"etc/passwd": "/" + BASE}), layer(whiteouts=[BASE])),
             problem="/etc/passwd is a link to /usr/share/base/passwd, which does not exist"),
        Case("link-to-directory", "app", (layer({BASE: _pw(4)}, symlinks={"etc/passwd": "/usr/share"}),),
             problem="/etc/passwd (a link resolving to /usr/share) is a directory"),
        Case("etc-is-a-file", "app", (layer({"etc": b"not a directory\n"}),),
             problem="/etc is a file, not a directory"),
        Case("dir-over-symlink", "app",
             (layer({"usr/etc/passwd": _pw(1400)}, symlinks={"etc": "usr/etc"}),
              layer({"etc/hostname": b"h\n"})),
             problem="the image has no /etc/passwd"),
        Case("hardlink-across-layers", "app", (layer({BASE: _pw(5)}), layer(hardlinks={"etc/passwd": BASE})),
             problem="which its layer does not hold before it", oracle_differs=HARDLINK_NOTE),
        Case("zstd", "app", (layer({"etc/passwd": _pw(1500)}, compress="zstd"),), uid=1500, gid=1500,
             user_layer=0),
        Case("zstd-under-gzip", "app:staff",
             (layer({"etc/passwd": _pw(1501), "etc/group": b"staff:x:51:\n"}, compress="zstd"),
              layer({"srv/x": b"x"}), layer({"srv/y": b"y"}, compress=False)),
             uid=1501, gid=51, user_layer=0),
        Case("no-media-type", "app",
             (layer({"etc/passwd": _pw(1600)}, compress="zstd"), layer({"srv/x": b"x"}),
              layer({"srv/y": b"y"}, compress=False)),
             uid=1600, gid=1600, user_layer=0, media_types=("", "", ""),
             oracle_skip="skopeo refuses layer descriptors without a media type"),
        Case("entry-names", "app:staff",
             (layer(raw=[raw("./etc/passwd", _pw(1700)), raw("/etc/group", b"staff:x:52:\n")]),),
             uid=1700, gid=52, user_layer=0),
        # Path tricks in entry names land where containerd's unpacker puts them (filepath.Clean
        # under the root): "../" cannot climb out, "//" and "/./" collapse.
        Case("entry-dotdot", "app", (layer(raw=[raw("../etc/passwd", _pw(1710))]),), uid=1710, gid=1710,
             user_layer=0),
        Case("entry-double-slash", "app", (layer(raw=[raw("//etc//passwd", _pw(1711))]),), uid=1711,
             gid=1711, user_layer=0),
        Case("entry-dot", "app", (layer(raw=[raw("etc/./passwd", _pw(1712))]),), uid=1712, gid=1712,
             user_layer=0),
        Case("entry-climbing", "app",
             (layer(raw=[raw("srv/../../../etc/passwd", _pw(1713))]),), uid=1713, gid=1713, user_layer=0),
        Case("foreign-below", "app",
             (layer({"etc/passwd": _pw(9)}), layer({"etc/passwd": _pw(1800)})),
             uid=1800, gid=1800, user_layer=1, media_types=(FOREIGN_DOCKER, None),
             oracle_skip="the runtime fetches foreign layers from their URLs; skopeo keeps them foreign"),
        Case("foreign-above", "app",
             (layer({"etc/passwd": _pw(1801)}), layer({"srv/x": b"x"})),
             problem="a non-distributable layer", media_types=(None, FOREIGN_DOCKER),
             oracle_skip="the runtime fetches foreign layers from their URLs; skopeo keeps them foreign"),
        Case("many-layers", "app",
             (layer({"etc/passwd": _pw(6), "etc/group": b"app:x:6:\n"}),
              layer({"etc/passwd": _pw(7)}, opaque=["etc"]),
              layer(whiteouts=["etc/passwd"]),
              layer({"etc/hostname": b"h\n"}),
              layer({"etc/passwd": _pw(1900)}),
              layer(whiteouts=["etc/group"]),
              layer({"srv/app": b"x"})),
             uid=1900, gid=1900, user_layer=4),
        Case("etc-deleted-then-group", "app",
             (layer({"etc/passwd": _pw(8)}), layer(whiteouts=["etc"]), layer({"etc/group": b"app:x:8:\n"})),
             problem="the image has no /etc/passwd"),
        Case("no-passwd-numeric", "1234", (layer({"srv/x": b"x"}),), uid=1234, gid=None),
    ]


def push(pusher: Pusher, case: Case, *, repository: str | None = None) -> str:
    """Push *case*'s image (honouring per-layer media types) and return its reference."""
    repository = repository or f"rootfs/{case.name}"
    if not case.media_types:
        return pusher.image(repository, "v1", user=case.user, layers=case.layers).reference
    config = Blob(OCI_CONFIG, json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"User": case.user},
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in case.layers]},
    }).encode())
    descriptors = []
    for blob, media_type in zip(case.layers, case.media_types, strict=True):
        pusher.blob(repository, blob)
        descriptor = blob.descriptor(media_type or None)
        if media_type == "":
            del descriptor["mediaType"]
        descriptors.append(descriptor)
    pusher.blob(repository, config)
    document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                "layers": descriptors}
    return pusher.manifest(repository, "v1", document, OCI_MANIFEST).reference


def push_all(pusher: Pusher, selected: Sequence[Case] | None = None) -> dict[str, str]:
    return {case.name: push(pusher, case) for case in (selected or cases())}


__all__ = ["DOCKER_CONFIG", "Case", "cases", "push", "push_all", "raw"]
