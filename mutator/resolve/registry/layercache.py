"""Layer digest → what that layer says about the account paths: shared by every image using it.

A layer is content-addressed, so its facts never go stale: an image built on a
base layer another image already brought in reads no byte of that base layer.
Facts are conclusive for the paths they cover only; a lookup needing another
path (``/etc/group`` after ``/etc/passwd``, or a link's target) rescans the
layer for the union and the larger facts replace the smaller.

Bounded by memory, not by count: each entry weighs what it holds (typically a
passwd and a group file, 1-3 KiB); ``layer_cache_max_bytes`` caps the sum
(default 64 MiB, some 20,000 typical layers). Concurrent scans of one layer are
coalesced: the second asker waits for the first scan rather than reading again (and
reads itself if the first asker gives up and its read is stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from cachetools import LRUCache

from mutator import metrics
from mutator.resolve.registry.layerscan import LayerFacts

_HIT = metrics.CACHE_LOOKUPS.labels("layer", "hit")
_MISS = metrics.CACHE_LOOKUPS.labels("layer", "miss")
_COALESCED = metrics.CACHE_LOOKUPS.labels("layer", "coalesced")
_ENTRIES = metrics.CACHE_ENTRIES.labels("layer")
_INFLIGHT = metrics.INFLIGHT_LOOKUPS.labels("layer")
MAX_ROUNDS = 8  # waits on others' scans before scanning ourselves; each round widens the facts


class LayerCache:
    def __init__(self, *, max_bytes: int) -> None:
        self._entries: LRUCache[str, LayerFacts] = LRUCache(maxsize=max_bytes, getsizeof=LayerFacts.weight)
        self._inflight: dict[str, asyncio.Task[LayerFacts]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return int(self._entries.currsize)

    def peek(self, digest: str) -> LayerFacts | None:
        return self._entries.get(digest)

    async def facts(
        self, digest: str, path: str, want: frozenset[str],
        scan: Callable[[frozenset[str]], Awaitable[LayerFacts]],
    ) -> LayerFacts:
        """Facts about *digest* conclusive for *path*; a scan for *want* (and what is known) if needed."""
        for _ in range(MAX_ROUNDS):
            known = self._entries.get(digest)
            if known is not None and path in known.covered:
                _HIT.inc()
                return known
            task = self._inflight.get(digest)
            if task is None:
                break
            _COALESCED.inc()
            try:
                shared = await asyncio.shield(task)  # our giving up must not stop the reader
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are the one cancelled
                break  # the reader's own lookup gave up on it: read it ourselves
            except Exception:  # the reader failed (its scan budget, a cut connection): try ourselves
                break
            if path in shared.covered:
                return shared
        _MISS.inc()
        known = self._entries.get(digest)
        wanted = want | {path} | (known.wanted if known is not None else frozenset())
        task = asyncio.ensure_future(self._scan(digest, wanted, scan))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "never retrieved"
        self._inflight[digest] = task
        _INFLIGHT.inc()
        # Not shielded: when the lookup that started the read gives up (lookup_timeout_seconds),
        # the read stops with it rather than running on unowned; others waiting then read themselves.
        return await task

    async def _scan(self, digest: str, wanted: frozenset[str],
                    scan: Callable[[frozenset[str]], Awaitable[LayerFacts]]) -> LayerFacts:
        try:
            facts = await scan(wanted)
        finally:
            if self._inflight.get(digest) is asyncio.current_task():
                del self._inflight[digest]
            _INFLIGHT.dec()
        with contextlib.suppress(ValueError):  # heavier than the whole cache: used, not kept
            self._entries[digest] = facts
        _ENTRIES.set(len(self._entries))
        return facts
