"""Resolved image users, kept for a while, and one lookup per image however many ask.

Warm admissions must cost microseconds, so a hit is one dict lookup. Lookups
in flight are shared: a Deployment scaling to 50 replicas of a cold image makes
one registry lookup, not 50. Which answers are kept is the caller's choice
(``keep``); the resolver keeps only what an image's content said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

from mutator import metrics

V = TypeVar("V")


class CoalescingCache(Generic[V]):
    def __init__(self, *, maxsize: int, ttl: float, keep: Callable[[V], bool]) -> None:
        """*keep* says whether a finished lookup's value may be cached."""
        self._entries: TTLCache[Hashable, V] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._inflight: dict[Hashable, asyncio.Task[V]] = {}
        self._keep = keep

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: Hashable) -> V | None:
        """The cached value, uncounted (for inspection)."""
        return self._entries.get(key)

    def hit(self, key: Hashable) -> V | None:
        """The cached value, counted as a hit: the warm path, a dict lookup and no await."""
        value = self._entries.get(key)
        if value is not None:
            metrics.CACHE_HIT.inc()
        return value

    def clear(self) -> None:
        self._entries.clear()
        metrics.CACHE_ENTRIES.labels("image").set(0)

    def join(self, key: Hashable, lookup: Callable[[], Awaitable[V]]) -> asyncio.Task[V]:
        """The lookup of *key* already in flight, or one started now (after :meth:`hit` missed).

        The lookup runs as its own task, so a caller that stops waiting (its
        admission deadline passed) does not cancel it for the others or for the
        cache.
        """
        task = self._inflight.get(key)
        if task is not None:
            metrics.CACHE_COALESCED.inc()
            return task
        metrics.CACHE_MISS.inc()
        task = asyncio.ensure_future(lookup())
        self._inflight[key] = task
        task.add_done_callback(lambda t: self._finished(key, t))
        return task

    def _finished(self, key: Hashable, task: asyncio.Task[V]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        value = task.result()
        if self._keep(value):
            self._entries[key] = value
            metrics.CACHE_ENTRIES.labels("image").set(len(self._entries))
