"""One layer's tar stream → the facts it states about a few paths (runs in a worker thread).

A layer is decoded (gzip, zstd, plain tar, or sniffed when the media type is
absent) and walked once with ``tarfile`` in stream mode. For the *wanted* paths
and every directory above them it records the first entry found (its type,
link target, and the content of a regular file up to
``MAX_ACCOUNT_FILE_BYTES``), whiteouts that delete them and opaque markers on
their directories. That is all the merged-tree lookup in :mod:`tree` needs to
answer ``lstat`` for those paths in this layer, so the facts can be cached by
layer digest and reused by every image sharing the layer.

Entry names are placed the way containerd's unpacker places them
(``archive.applyNaive``): ``filepath.Clean``, then joined under the root, so
``./etc/passwd``, ``/etc/passwd``, ``//etc//passwd``, ``etc/./passwd`` and
``../etc/passwd`` all land on ``etc/passwd``; an entry that cleans to the root
is ignored; a whiteout naming ``.`` or ``..`` is refused, as the unpacker
refuses it. Within one layer the first entry of a path is kept (builders never
write a path twice; the unpacker would keep the last: a hand-made tar that
repeats ``etc/passwd`` can make us patch a different *non-zero* uid, never
root, since the patch itself carries the uid). An entry whose directory is a symlink
written earlier *in the same layer* is taken at its literal path, where the unpacker
would write through the link; no image builder writes such a layer (a layer is a diff
of real paths), and the node-oracle fuzz keeps to what builders write.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard

from mutator.errors import RegistryError, ScanLimitExceeded, UnsupportedImage

MAX_ACCOUNT_FILE_BYTES = 4 * 1024 * 1024
# zstd frames may ask for a window up to 2 GiB; image builders use 8 MiB (level ≤ 19) or
# 128 MiB (--long). A bigger one is refused rather than allocated.
MAX_ZSTD_WINDOW_BYTES = 128 * 1024 * 1024
READ_BYTES = 1024 * 1024  # tarfile skips unwanted member data in reads of this size
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

TAR = "tar"
GZIP = "gzip"
ZSTD = "zstd"
SNIFF = ""
FOREIGN = "foreign"
LAYER_ENCODINGS: Mapping[str, str] = {
    "application/vnd.oci.image.layer.v1.tar": TAR,
    "application/vnd.docker.image.rootfs.diff.tar": TAR,
    "application/vnd.oci.image.layer.v1.tar+gzip": GZIP,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd": ZSTD,
    "": SNIFF,  # an absent media type: the magic number tells
    # The runtime fetches these from the URLs in their descriptor, not from the registry.
    "application/vnd.oci.image.layer.nondistributable.v1.tar": FOREIGN,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": FOREIGN,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": FOREIGN,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": FOREIGN,
}

DIR, FILE, SYMLINK, HARDLINK, OTHER = "dir", "file", "symlink", "hardlink", "other"


def encoding(media_type: str) -> str:
    try:
        return LAYER_ENCODINGS[media_type]
    except KeyError:
        raise UnsupportedImage(f"layer media type {media_type!r} is not supported") from None


@dataclass(frozen=True, slots=True)
class Entry:
    """What a layer holds at one path."""

    kind: str
    target: str = ""  # a symlink's raw target; an unresolved hardlink's normalised target
    content: bytes | None = None  # a regular file's bytes, when within the limit
    size: int = 0
    what: str = ""  # OTHER: "a FIFO", "a character device", ...


@dataclass(frozen=True, slots=True)
class LayerFacts:
    """What one layer states about ``covered`` paths: conclusive for exactly those."""

    wanted: frozenset[str]
    covered: frozenset[str]
    entries: Mapping[str, Entry] = field(default_factory=dict)
    whiteouts: frozenset[str] = frozenset()  # paths a .wh. entry deletes below this layer
    opaque: frozenset[str] = frozenset()  # directories ("" is the root) hiding what lies below
    verified: bool = False  # read to the end and the digest matched
    bytes_read: int = 0  # compressed bytes

    def weight(self) -> int:
        """Approximate bytes held, for the cache's memory bound."""
        content = sum(len(e.content or b"") + len(e.target) for e in self.entries.values())
        paths = len(self.covered) + len(self.entries) + len(self.whiteouts) + len(self.opaque)
        return 512 + content + 160 * paths


def closure(paths: frozenset[str] | set[str]) -> frozenset[str]:
    """The paths and every directory above them (never the root, ``""``)."""
    found = set()
    for path in paths:
        while path and path not in found:
            found.add(path)
            path = posixpath.dirname(path)
    return frozenset(found)


def clean(name: str) -> str:
    """Where containerd's unpacker puts an entry, relative to the root ("" is the root)."""
    path = posixpath.normpath("/" + name)
    return path.lstrip("/")


class Budget:
    """Bytes one lookup may still read: compressed and decoded, each bounded by max_scan_bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.compressed = limit
        self.decoded = limit

    def charge(self, *, compressed: int = 0, decoded: int = 0, what: str) -> None:
        self.compressed -= compressed
        self.decoded -= decoded
        if self.compressed < 0 or self.decoded < 0:
            kind = "decoded" if self.decoded < 0 else "compressed"
            raise ScanLimitExceeded(
                f"{what}: reading it would pass max_scan_bytes ({self.limit} {kind} bytes per image); "
                "a decompression bomb, or an image that needs a higher limit"
            )


class _Source(io.RawIOBase):
    """The compressed blob, charged to the budget, with the sniffed head put back in front."""

    def __init__(self, raw: IO[bytes], head: bytes, budget: Budget, what: str) -> None:
        self._raw = raw
        self._head = head
        self._budget = budget
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """The next bytes as the blob's reader gave them: no copy through a caller's buffer."""
        if size < 0:
            size = READ_BYTES
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        data = self._raw.read(size)
        self._budget.charge(compressed=len(data), what=self._what)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Decoded(io.RawIOBase):
    """The layer's tar bytes, whatever the encoding, charged to the budget as they are decoded."""

    def __init__(self, raw: IO[bytes], kind: str, budget: Budget, what: str) -> None:
        head = b""
        if kind == SNIFF:
            head = raw.read(4)
            budget.charge(compressed=len(head), what=what)
            kind = GZIP if head[:2] == b"\x1f\x8b" else ZSTD if head == b"\x28\xb5\x2f\xfd" else TAR
        self._source = _Source(raw, head, budget, what)
        self._kind = kind
        self._budget = budget
        self._what = what
        self._zlib: Any = None
        self._pending = b""
        self._zstd: Any = None
        if kind == ZSTD:
            self._zstd = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW_BYTES).stream_reader(
                self._source, read_size=READ_BYTES, read_across_frames=True
            )
        self.decoded = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Up to *size* decoded bytes, handed on as the decoder made them.

        tarfile's stream mode reads through every member it skips; going through
        ``readinto`` would copy each of those bytes twice more on the way.
        """
        if size < 0:
            size = READ_BYTES
        if self._kind == ZSTD:
            try:
                data = self._zstd.read(size)
            except zstandard.ZstdError as exc:
                if "too much memory" in str(exc):
                    raise UnsupportedImage(f"{self._what} needs a zstd window over the "
                                           f"{MAX_ZSTD_WINDOW_BYTES} bytes we allocate") from None
                raise RegistryError(f"{self._what} is not valid zstd: {exc}") from None
        elif self._kind == GZIP:
            data = self._gunzip(size)
        else:
            data = self._source.read(size)
        self.decoded += len(data)
        self._budget.charge(decoded=len(data), what=self._what)
        return data

    def _gunzip(self, size: int) -> bytes:
        while True:
            if self._zlib is None:  # at the start, or between the members of a multi-member gzip
                self._pending = self._pending or self._source.read(READ_BYTES)
                if not self._pending:
                    return b""
                self._zlib = zlib.decompressobj(wbits=31)
            compressed = self._zlib.unconsumed_tail or self._pending or self._source.read(READ_BYTES)
            self._pending = b""
            if not compressed:
                raise RegistryError(f"{self._what}: the gzip stream ends early")
            try:
                data = self._zlib.decompress(compressed, size)
            except zlib.error as exc:
                raise RegistryError(f"{self._what} is not valid gzip: {exc}") from None
            if self._zlib.eof:
                self._pending, self._zlib = self._zlib.unused_data, None
            if data:
                return data


def _other(member: tarfile.TarInfo) -> str:
    if member.isfifo():
        return "a FIFO"
    if member.ischr():
        return "a character device"
    if member.isblk():
        return "a block device"
    return f"an entry of unsupported tar type {member.type!r}"


def scan(raw: IO[bytes], kind: str, wanted: frozenset[str], *, budget: Budget, what: str
         ) -> tuple[LayerFacts, bool]:
    """Walk one layer; returns its facts and whether the walk stopped before the end.

    The walk stops as soon as every wanted path has been decided by this layer
    (an entry or a whiteout): nothing after it can change the answer.
    """
    relevant = closure(wanted)
    tops = {p.partition("/")[0] for p in relevant}
    entries: dict[str, Entry] = {}
    whiteouts: set[str] = set()
    opaque: set[str] = set()
    pending = set(wanted)
    decoded = _Decoded(raw, kind, budget, what)
    try:
        with tarfile.open(fileobj=decoded, mode="r|", bufsize=READ_BYTES) as tar:  # type: ignore[call-overload]
            _skip_by_discarding(tar.fileobj, decoded)
            for member in tar:
                path = clean(member.name)
                if not path:
                    continue
                directory, base = posixpath.split(path)
                if path.partition("/")[0] in tops:
                    parent = directory
                    while parent:  # an entry below a directory implies the directory (mkparent)
                        if parent in relevant and parent not in entries:
                            entries[parent] = Entry(DIR)
                            pending.discard(parent)
                        parent = posixpath.dirname(parent)
                if base == OPAQUE_MARKER:
                    if directory in relevant or not directory:
                        opaque.add(directory)
                elif base.startswith(WHITEOUT_PREFIX):
                    gone = base[len(WHITEOUT_PREFIX):]
                    if gone in ("", ".", ".."):
                        raise RegistryError(f"{what} has an invalid whiteout {member.name!r}, which the "
                                            "runtime refuses to unpack")
                    gone = posixpath.join(directory, gone)
                    if gone in relevant and gone not in entries:
                        whiteouts.add(gone)
                        pending.discard(gone)
                elif path in relevant and path not in entries:
                    entries[path] = _entry(tar, member, entries)
                    pending.discard(path)
                if not pending:
                    return _facts(wanted, entries, whiteouts, opaque, complete=False), True
    except tarfile.TarError as exc:
        if decoded.decoded == 0:
            raise RegistryError(f"{what} is not a readable tar archive: {exc}") from None
        # A tar cut short (some tools omit the end marker, others are truncated): what was
        # read stands only where it decided a path; the rest is unknown.
        raise RegistryError(f"{what} is truncated after {decoded.decoded} bytes and does not "
                            f"decide {', '.join('/' + p for p in sorted(pending))}: {exc}") from None
    return _facts(wanted, entries, whiteouts, opaque, complete=True), False


def _skip_by_discarding(stream: Any, decoded: _Decoded) -> None:
    """Make tarfile's stream skip a member's data by decoding and dropping it.

    Its own forward seek reads the skipped bytes through ``read``, which joins
    and slices each block (two more copies of every byte of every member we do
    not want); this drops each decoded block as it comes. Same bytes read, same
    budget charged, same position kept (short at a truncated end, as before).
    """
    def seek(pos: int = 0) -> int:
        ahead = pos - stream.pos
        if ahead < 0:
            raise tarfile.StreamError("seeking backwards is not allowed")
        buffered = len(stream.buf)
        if ahead <= buffered:
            stream.buf = stream.buf[ahead:]
            stream.pos = pos
            return pos
        stream.buf = b""
        stream.pos += buffered
        left = ahead - buffered
        while left:
            data = decoded.read(min(left, READ_BYTES))
            if not data:
                break
            left -= len(data)
            stream.pos += len(data)
        return stream.pos

    stream.seek = seek


def _entry(tar: tarfile.TarFile, member: tarfile.TarInfo, entries: Mapping[str, Entry]) -> Entry:
    if member.isdir():
        return Entry(DIR)
    if member.issym():
        return Entry(SYMLINK, target=member.linkname)
    if member.islnk():
        # containerd links to the target inside this layer's own directory (overlayfs
        # snapshotter: each layer is unpacked alone); one written earlier in the layer.
        target = clean(member.linkname)
        known = entries.get(target)
        return known if known is not None else Entry(HARDLINK, target=target)
    if member.isreg():
        if member.size > MAX_ACCOUNT_FILE_BYTES:
            return Entry(FILE, size=member.size)
        extracted = tar.extractfile(member)
        content = extracted.read() if extracted else b""
        return Entry(FILE, content=content, size=len(content))
    return Entry(OTHER, what=_other(member))


def _facts(wanted: frozenset[str], entries: dict[str, Entry], whiteouts: set[str], opaque: set[str],
           *, complete: bool) -> LayerFacts:
    covered = closure(wanted) if complete else closure(set(entries) | whiteouts)
    return LayerFacts(wanted=wanted, covered=covered, entries=entries,
                      whiteouts=frozenset(whiteouts), opaque=frozenset(opaque))
