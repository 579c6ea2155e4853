"""Find ``/etc/passwd`` and ``/etc/group`` as the container will see them, streaming layers.

The path is resolved by :class:`~mutator.resolve.registry.tree.MergedTree` exactly as
containerd resolves it (links followed inside the image); the tree asks this
module, layer by layer from the top, for facts about the paths it walks. Those
come from the shared :class:`~mutator.resolve.registry.layercache.LayerCache`, or from
streaming the layer: chunks are pulled from the event loop by a worker thread
that decodes (gzip, zstd, tar) and walks the tar, so the loop never decompresses,
nothing is buffered whole, and a layer is left as soon as it has decided every
path asked of it. Layers below the one that decides are never downloaded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from mutator import metrics
from mutator.errors import RegistryUnavailable, UnreadableAccountFile
from mutator.resolve.registry import layerscan
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.registry.content import BlobStream, Descriptor
from mutator.resolve.registry.layercache import LayerCache
from mutator.resolve.registry.layerscan import FOREIGN, MAX_ACCOUNT_FILE_BYTES, Budget, LayerFacts
from mutator.resolve.registry.reference import Reference
from mutator.resolve.registry.tree import AccountFile, MergedTree

PASSWD = "etc/passwd"
GROUP = "etc/group"
DEFAULT_MAX_SCAN_BYTES = 2 * 1024 * 1024 * 1024
# Per chunk: how long the scanning thread waits for the event loop before giving up.
PULL_TIMEOUT_SECONDS = 120.0
BATCH_BYTES = 512 * 1024

__all__ = ["GROUP", "MAX_ACCOUNT_FILE_BYTES", "PASSWD", "AccountFiles", "account_files"]


@dataclass(slots=True)
class AccountFiles:
    """The merged files (``None``: absent or unreadable) and what reading them cost."""

    passwd: bytes | None = None
    group: bytes | None = None
    passwd_layer: str | None = None  # digest of the layer whose /etc/passwd was read
    group_layer: str | None = None
    passwd_problem: str | None = None  # why the runtime could not read it (a dangling link, a FIFO…)
    group_problem: str | None = None
    layers_read: int = 0  # layer downloads (a rescan for a link target counts again)
    bytes_read: int = 0  # compressed bytes downloaded by this lookup (cached layers cost none)
    unverified_layers: list[str] = field(default_factory=list)  # left early: digest not checked
    foreign_layers: list[str] = field(default_factory=list)  # not fetched; see _Layers.facts


async def _batch(stream: BlobStream) -> bytes:
    """Up to ``BATCH_BYTES`` of the blob (``b""`` only at its end): one hop between thread and loop."""
    parts: list[bytes] = []
    size = 0
    while size < BATCH_BYTES:
        chunk = await stream.next_unhashed()
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class _Pull(io.RawIOBase):
    """A blocking file object for the scanning thread, fed from the event loop.

    The next batch is requested as soon as one arrives, so the download of the
    next bytes overlaps the decoding of these.
    """

    def __init__(self, stream: BlobStream, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._pending = b""  # the current batch, read up to _offset: no quadratic re-slicing
        self._offset = 0
        self._next: concurrent.futures.Future[bytes] | None = None
        self._eof = False
        self.stop = threading.Event()
        self.failed: Exception | None = None

    def readable(self) -> bool:
        return True

    def _request(self) -> None:
        self._next = asyncio.run_coroutine_threadsafe(_batch(self._stream), self._loop)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Up to *size* bytes (a whole batch if *size* is negative); a batch asked for whole is
        handed on as it came, not copied."""
        while self._offset >= len(self._pending) and not self._eof:
            if self.stop.is_set():
                raise RegistryUnavailable("layer scan abandoned")
            if self._next is None:
                self._request()
            assert self._next is not None
            pending, self._next = self._next, None
            data = pending.result(timeout=PULL_TIMEOUT_SECONDS)
            if data:
                self._request()  # fetch the next batch while this one is decoded
            self._stream.absorb(data)  # hashed here, in the worker thread, not on the event loop
            self._pending, self._offset = data, 0
            self._eof = not data
        start = self._offset
        end = len(self._pending) if size < 0 else min(len(self._pending), start + size)
        self._offset = end
        if start == 0 and end == len(self._pending):
            return self._pending
        return self._pending[start:end]

    async def settle(self) -> None:
        """Wait for a batch still in flight and hash it, so the stream can be read on (or closed).

        Its failure is kept in ``failed``: it matters only if the rest of the blob is wanted.
        """
        pending, self._next = self._next, None
        current = asyncio.current_task()
        if pending is not None and current is not None and current.cancelling():
            pending.cancel()  # the lookup gave up: do not wait on the network for it
        elif pending is not None:
            try:
                self._stream.absorb(await asyncio.wrap_future(pending))
            except Exception as exc:
                self.failed = exc


@dataclass(slots=True, kw_only=True)
class _Layers:
    """The image's layers as :class:`~mutator.resolve.registry.tree.MergedTree` asks for them."""

    client: RegistryClient
    ref: Reference
    layers: Sequence[Descriptor]
    wanted: frozenset[str]
    cache: LayerCache
    budget: Budget
    files: AccountFiles
    known: dict[int, LayerFacts] = field(default_factory=dict)  # facts read so far, by layer

    def __len__(self) -> int:
        return len(self.layers)

    def digest(self, index: int) -> str:
        return self.layers[index].digest

    async def facts(self, index: int, path: str) -> LayerFacts:
        known = self.known.get(index)
        if known is not None and path in known.covered:
            return known
        layer = self.layers[index]
        if layerscan.encoding(layer.media_type) == FOREIGN:
            # The runtime fetches it from the URLs in its descriptor; we read no foreign URL.
            # Above it, every answer is exact; an answer that needs it is refused, never guessed.
            raise UnreadableAccountFile(
                f"/{path} is decided in or below layer {layer.digest}, a non-distributable layer "
                f"({layer.media_type}) that is not fetched from the registry"
            )
        facts = await self.cache.facts(layer.digest, path, self.wanted,
                                        lambda wanted: self._scan(layer, wanted))
        self.known[index] = facts
        return facts

    async def _scan(self, layer: Descriptor, wanted: frozenset[str]) -> LayerFacts:
        what = f"layer {layer.digest} of {self.ref}"
        kind = layerscan.encoding(layer.media_type)
        async with self.client.blob(self.ref, layer) as stream:
            try:
                return await self._read(layer, stream, kind, wanted, what=what)
            finally:  # bytes read count, whether the scan succeeded or not
                metrics.LAYER_BYTES.inc(stream.bytes_read)
                self.files.layers_read += 1
                self.files.bytes_read += stream.bytes_read

    async def _read(self, layer: Descriptor, stream: BlobStream, kind: str, wanted: frozenset[str], *,
                    what: str) -> LayerFacts:
        pull = _Pull(stream, asyncio.get_running_loop())
        try:
            facts, early = await asyncio.to_thread(
                layerscan.scan, pull, kind, wanted, budget=self.budget, what=what
            )
        finally:
            pull.stop.set()  # a cancelled await must not leave the thread pulling
            await pull.settle()
        if pull.failed is not None and not early:
            raise pull.failed
        # The rest of a layer read to its end (tar padding, compression trailer) is read so the
        # digest is checked, unless that would pass the scan budget.
        if not early and layer.size - stream.bytes_read <= self.budget.compressed:
            before = stream.bytes_read
            await stream.drain()
            self.budget.compressed -= stream.bytes_read - before
        if not stream.verified:
            self.files.unverified_layers.append(layer.digest)
        return dataclasses.replace(facts, verified=stream.verified, bytes_read=stream.bytes_read)


async def account_files(
    client: RegistryClient,
    ref: Reference,
    layers: Sequence[Descriptor],
    *,
    group: bool,
    passwd: bool = True,
    cache: LayerCache | None = None,
    max_scan_bytes: int = DEFAULT_MAX_SCAN_BYTES,
) -> AccountFiles:
    """The merged ``/etc/passwd`` (when *passwd*) and ``/etc/group`` (when *group*) of the image.

    A layer read to its end is digest-verified; one left early because it
    decided every path asked of it is listed in ``unverified_layers``.
    """
    files = AccountFiles()
    wanted = frozenset(p for p, needed in ((PASSWD, passwd), (GROUP, group)) if needed)
    encodings = layerscan.LAYER_ENCODINGS
    files.foreign_layers = [d.digest for d in layers if encodings.get(d.media_type) == FOREIGN]
    cache = cache if cache is not None else LayerCache(max_bytes=1 << 24)  # an empty cache is falsy
    source = _Layers(client=client, ref=ref, layers=layers, wanted=wanted, cache=cache,
                     budget=Budget(max_scan_bytes), files=files)
    tree = MergedTree(source)
    for path, name in ((PASSWD, "passwd"), (GROUP, "group")):
        if path in wanted:
            try:
                found = await tree.read("/" + path)
            except UnreadableAccountFile as exc:
                found = AccountFile(None, problem=str(exc))
            setattr(files, name, found.content)
            setattr(files, f"{name}_layer", found.layer)
            setattr(files, f"{name}_problem", found.problem)
    return files
