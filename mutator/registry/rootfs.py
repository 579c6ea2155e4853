"""Find ``/etc/passwd`` and ``/etc/group`` as the container will see them, streaming layers.

Layers are read top-down, because the topmost layer that has a file (or deletes
it) decides what the container sees. A layer is streamed through ``tarfile``
in stream mode in a worker thread, pulling chunks from the event loop on demand,
so nothing is buffered whole and the download stops as soon as the files are
found. Whiteouts follow the OCI image spec: ``.wh.NAME`` deletes NAME below,
``DIR/.wh..wh..opq`` hides everything below in DIR.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from mutator.errors import RegistryError, RegistryUnavailable, UnsupportedImage
from mutator.registry.client import BlobStream, Descriptor, RegistryClient
from mutator.registry.reference import Reference

PASSWD = "etc/passwd"
GROUP = "etc/group"
MAX_ACCOUNT_FILE_BYTES = 4 * 1024 * 1024
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Per chunk: how long the scanning thread waits for the event loop before giving up.
PULL_TIMEOUT_SECONDS = 120.0

_READABLE_LAYERS = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "",  # absent media type: tarfile sniffs the compression
})


@dataclass(slots=True)
class AccountFiles:
    """The merged files (``None``: absent in the final root filesystem) and what reading cost."""

    passwd: bytes | None = None
    group: bytes | None = None
    layers_read: int = 0
    bytes_read: int = 0
    unverified_layers: list[str] = field(default_factory=list)


def _normalise(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    return posixpath.normpath(name) if name else ""


def _covers(directory: str, path: str) -> bool:
    return path == directory or path.startswith(directory + "/")


class _LayerVerdict:
    """What one layer says about each wanted path: its content, 'deleted below', or nothing."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted
        self.found: dict[str, bytes] = {}
        self.deleted: set[str] = set()

    def complete(self) -> bool:
        return self.wanted <= self.found.keys()


def _scan(fileobj: io.RawIOBase, wanted: set[str]) -> tuple[_LayerVerdict, bool]:
    """Scan one layer's tar stream; returns the verdict and whether it stopped early."""
    verdict = _LayerVerdict(wanted)
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                path = _normalise(member.name)
                directory, base = posixpath.split(path)
                if path in wanted:
                    if not member.isreg():
                        kind = "a link" if member.issym() or member.islnk() else "not a file"
                        raise UnsupportedImage(f"/{path} in the image is {kind}; cannot read it")
                    if member.size > MAX_ACCOUNT_FILE_BYTES:
                        raise RegistryError(f"/{path} is {member.size} bytes, over the limit")
                    extracted = tar.extractfile(member)
                    verdict.found[path] = extracted.read() if extracted else b""
                    if verdict.complete():
                        return verdict, True
                elif base == OPAQUE_MARKER:
                    verdict.deleted |= {w for w in wanted if _covers(directory, w) and w != directory}
                elif base.startswith(WHITEOUT_PREFIX):
                    gone = posixpath.join(directory, base[len(WHITEOUT_PREFIX):])
                    verdict.deleted |= {w for w in wanted if _covers(gone, w)}
    except tarfile.TarError as exc:
        raise RegistryError(f"a layer is not a readable tar archive: {exc}") from None
    return verdict, False


class _Pull(io.RawIOBase):
    """A blocking file object for the scanning thread, fed chunk by chunk from the event loop."""

    def __init__(self, stream: BlobStream, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._pending = b""
        self._eof = False
        self.stop = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._eof:
            if self.stop.is_set():
                raise RegistryUnavailable("layer scan abandoned")
            future = asyncio.run_coroutine_threadsafe(self._stream.next_chunk(), self._loop)
            chunk = future.result(timeout=PULL_TIMEOUT_SECONDS)
            if chunk:
                self._pending = chunk
            else:
                self._eof = True
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


async def _scan_layer(
    client: RegistryClient, ref: Reference, layer: Descriptor, wanted: set[str], files: AccountFiles
) -> _LayerVerdict:
    if layer.media_type not in _READABLE_LAYERS:
        raise UnsupportedImage(f"{ref}: layer media type {layer.media_type!r} is not supported")
    loop = asyncio.get_running_loop()
    async with client.blob(ref, layer) as stream:
        pull = _Pull(stream, loop)
        try:
            verdict, early = await asyncio.to_thread(_scan, pull, wanted)
        finally:
            pull.stop.set()  # a cancelled await must not leave the thread pulling
        if not early:
            await stream.drain()  # tar padding and compression trailer: then the digest is checked
        files.layers_read += 1
        files.bytes_read += stream.bytes_read
        if not stream.verified:
            files.unverified_layers.append(layer.digest)
    return verdict


async def account_files(
    client: RegistryClient, ref: Reference, layers: Sequence[Descriptor], *, group: bool
) -> AccountFiles:
    """The merged ``/etc/passwd`` (and ``/etc/group`` when *group*) of the image's root filesystem.

    A layer read to its end is digest-verified; one left early because both
    files were found is listed in ``unverified_layers`` (its prefix was enough).
    """
    files = AccountFiles()
    pending = {PASSWD, GROUP} if group else {PASSWD}
    for layer in reversed(layers):
        if not pending:
            break
        verdict = await _scan_layer(client, ref, layer, set(pending), files)
        for path, content in verdict.found.items():
            setattr(files, posixpath.basename(path), content)
        pending -= verdict.found.keys() | verdict.deleted
    return files

