"""Big layers for the benchmark, streamed into gzip so that a 500 MB layer never sits in memory whole."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile

from tests.support.images import OCI_LAYER_GZIP, Blob

CHUNK = 1024 * 1024


class _Filler(io.RawIOBase):
    """*size* bytes made as they are read: zeros, random bytes, or "mixed" (half of each per read,
    about 2:1 under gzip, like the binaries and text of a real layer)."""

    def __init__(self, size: int, *, content: str) -> None:
        self._left = size
        self._content = content

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self._left)
        if self._content == "zeros":
            buffer[:size] = bytes(size)
        elif self._content == "random":
            buffer[:size] = os.urandom(size)
        else:
            half = size // 2
            buffer[:size] = os.urandom(half) + bytes(size - half)
        self._left -= size
        return size


class _Hashing(io.RawIOBase):
    """Writes through to *target*, hashing the uncompressed tar on the way (its diff_id)."""

    def __init__(self, target: gzip.GzipFile) -> None:
        self._target = target
        self.hasher = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.hasher.update(data)
        return self._target.write(data)


def big_layer(size: int, *, content: str, files: dict[str, bytes] | None = None) -> Blob:
    """A gzip layer holding one *size*-byte filler file, then *files* (so they sit at its very end)."""
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as zipped:
        hashing = _Hashing(zipped)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT,
                          copybufsize=CHUNK) as tar:
            info = tarfile.TarInfo("usr/share/filler.bin")
            info.size, info.mode = size, 0o644
            tar.addfile(info, io.BufferedReader(_Filler(size, content=content), CHUNK))
            for path, data in (files or {}).items():
                info = tarfile.TarInfo(path)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return Blob(OCI_LAYER_GZIP, compressed.getvalue(), "sha256:" + hashing.hasher.hexdigest())
