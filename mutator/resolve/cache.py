"""A bounded cache with one lookup in flight per key, however many ask: the resolver's building block.

Warm admissions must cost microseconds, so a hit is one cachetools lookup and no
await. Lookups in flight are shared: a Deployment scaling to 500 replicas of a
cold image makes one registry lookup, not 500, and a lookup runs as its own task
so that a caller giving up at its admission deadline neither cancels it for the
others nor keeps it from filling the cache for the controller's retry.

What may change decides how an entry is kept (the caller picks the cachetools
class): a tag's digest for a TTL, content addressed by digest until evicted. Which
finished lookups are kept at all is the caller's ``keep``: a definite answer yes,
a registry failure never (the next admission asks again).

Memory bound: each cache holds at most ``maxsize`` entries; the resolver's two
caches together cost about 750 B per distinct image (measured by the benchmark).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import Cache, LRUCache, TTLCache

from mutator import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CoalescingCache(Generic[K, V]):
    def __init__(self, name: str, entries: Cache[K, V], *,
                 keep: Callable[[K, V], V | None] = lambda key, value: value) -> None:
        """*name* labels the metrics (tag, image, …); *keep* maps a finished lookup's key and value
        to what is cached, or ``None`` to cache nothing (a failure, say)."""
        self.name = name
        self._entries = entries
        self._inflight: dict[K, asyncio.Task[V]] = {}
        self._keep = keep
        # Bound once: labels() costs a lock and a dict lookup, too much for the warm path.
        self._hits = metrics.CACHE_LOOKUPS.labels(name, "hit")
        self._misses = metrics.CACHE_LOOKUPS.labels(name, "miss")
        self._coalesced = metrics.CACHE_LOOKUPS.labels(name, "coalesced")
        self._size = metrics.CACHE_ENTRIES.labels(name)
        self._running = metrics.INFLIGHT_LOOKUPS.labels(name)

    @classmethod
    def ttl(cls, name: str, *, maxsize: int, ttl: float,
            keep: Callable[[K, V], V | None] = lambda key, value: value) -> CoalescingCache[K, V]:
        """Entries trusted for *ttl* seconds: what can change behind the same key (a tag)."""
        return cls(name, TTLCache(maxsize=maxsize, ttl=ttl), keep=keep)

    @classmethod
    def lru(cls, name: str, *, maxsize: int,
            keep: Callable[[K, V], V | None] = lambda key, value: value) -> CoalescingCache[K, V]:
        """Entries that never go stale (content addressed by digest), least recently used evicted."""
        return cls(name, LRUCache(maxsize=maxsize), keep=keep)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def peek(self, key: K) -> V | None:
        """The cached value, uncounted (for inspection)."""
        return self._entries.get(key)

    def hit(self, key: K) -> V | None:
        """The cached value, counted as a hit: the warm path, a dict lookup and no await.

        A miss is not counted here but by :meth:`join`, which tells a miss from a coalesced wait.
        """
        try:
            value = self._entries[key]  # not .get(): that looks the key up (and checks its TTL) twice
        except KeyError:
            return None
        self._hits.inc()
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._size.set(len(self._entries))

    def clear(self) -> None:
        self._entries.clear()
        self._size.set(0)

    def join(self, key: K, lookup: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        """The lookup of *key* already in flight, or one started now (after :meth:`hit` missed).

        Await the task through :func:`asyncio.shield`: it is shared, and one
        waiter's cancellation must not cancel it for the others.
        """
        task = self._inflight.get(key)
        if task is not None:
            self._coalesced.inc()
            return task
        self._misses.inc()
        task = asyncio.ensure_future(lookup())
        self._inflight[key] = task
        self._running.inc()
        task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        self._inflight.pop(key, None)
        self._running.dec()
        if not task.cancelled() and task.exception() is None:
            self.settle(key, task.result())

    def settle(self, key: K, value: V) -> None:
        """Cache what *keep* makes of *value*, found for *key*: by a lookup :meth:`join` ran, or
        by one its caller ran outside it (the same key asked again with other credentials)."""
        kept = self._keep(key, value)
        if kept is not None:
            self.put(key, kept)
