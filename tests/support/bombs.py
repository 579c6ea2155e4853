"""Layers that decode to far more than they weigh, built in well under a second.

A layer holding one file of N zero bytes compresses about 1000:1 with deflate;
compressing a gigabyte would take seconds, so the deflate stream is assembled
instead: one mebibyte of zeros is compressed once, ending in a full flush (which
resets the compressor, making that block reusable), and repeated.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib

import zstandard

from tests.support.images import Blob, encode, sha256

MIB = 1024 * 1024
_ZEROS = bytes(MIB)


def _deflate(data: bytes, *, final: bool) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)


def zeros_layer(mebibytes: int, *, compress: str = "gzip", name: str = "usr/share/zeros") -> Blob:
    """A layer with one file of *mebibytes* MiB of zeros (and nothing else)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = mebibytes * MIB, 0o644
    header = info.tobuf(tarfile.PAX_FORMAT)
    trailer = bytes(2 * tarfile.BLOCKSIZE)  # the end marker; the data needs no padding (MiB multiple)
    digest = _tar_digest(header, mebibytes, trailer)
    if compress == "zstd":
        compressor = zstandard.ZstdCompressor(level=3).compressobj()
        parts = [compressor.compress(header)]
        parts += [compressor.compress(_ZEROS) for _ in range(mebibytes)]
        parts += [compressor.compress(trailer), compressor.flush()]
        return Blob("application/vnd.oci.image.layer.v1.tar+zstd", b"".join(parts), digest)
    block = _deflate(_ZEROS, final=False)
    crc = zlib.crc32(header)
    for _ in range(mebibytes):
        crc = zlib.crc32(_ZEROS, crc)
    crc = zlib.crc32(trailer, crc)
    size = len(header) + mebibytes * MIB + len(trailer)
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    body = _deflate(header, final=False) + block * mebibytes + _deflate(trailer, final=True)
    data = gzip_header + body + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)
    return Blob("application/vnd.oci.image.layer.v1.tar+gzip", data, digest)


def _tar_digest(header: bytes, mebibytes: int, trailer: bytes) -> str:
    import hashlib

    hasher = hashlib.sha256(header)
    for _ in range(mebibytes):
        hasher.update(_ZEROS)
    hasher.update(trailer)
    return "sha256:" + hasher.hexdigest()


def big_file_layer(path: str, size: int, *, compress: str = "gzip") -> Blob:
    """A layer whose *path* is a file of *size* bytes (repeated passwd-looking lines)."""
    line = b"filler:x:4000:4000::/nonexistent:/usr/sbin/nologin\n"
    data = (line * (size // len(line) + 1))[:size]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(path)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return encode(buffer.getvalue(), compress)


__all__ = ["MIB", "big_file_layer", "sha256", "zeros_layer"]
