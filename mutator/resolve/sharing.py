"""Lookups shared by requesters with different credentials: an answer is shared, a refusal is not.

The resolver coalesces concurrent lookups of one tag (or digest) into one, made with the
credentials of whoever asked first. Sharing what it found is safe: the access gate answers a
private image only to those whose own credentials may read it. Sharing a refusal (HTTP 401,
403, 404) is not: it is what the registry says to *those* credentials. Without this, a Pod
whose pull secret opens a cold private image, admitted at the same moment as a Pod of another
namespace without one that asked first, would get that Pod's "requires authentication" and, in
enforce mode, be refused once.

So each shared lookup records whose credentials it offered (an :class:`Attempt`) and whether
the registry refused them. A waiter that receives a refusal made with credentials other than
its own looks the key up again with its own, once per (key, requester) however many wait. The
cost falls on refusals only: a public image, or a herd offering the same credentials, costs one
lookup as before, and what a lookup found is cached for everyone (the gate screens it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from mutator.errors import RegistryError
from mutator.resolve.access import Requester, requester
from mutator.resolve.cache import CoalescingCache
from mutator.resolve.registry.authn.keyring import Credential

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
REFUSALS = frozenset({401, 403, 404})  # what a registry answers credentials that may not read an image


@dataclass(slots=True)
class Attempt:
    """What one lookup offered and met, filled in by the lookup as it runs."""

    requester: Requester | None = None
    refused: bool = False

    def offered(self, credentials: Sequence[Credential]) -> None:
        self.requester = requester(tuple(credentials))

    def failed(self, error: BaseException) -> None:
        """Note whether *error* is the registry refusing these credentials (not its being down)."""
        self.refused = (isinstance(error, RegistryError) and not error.temporary
                        and error.status in REFUSALS)


class SharedLookups(Generic[K, V]):
    """*cache*'s lookups, shared among all requesters except for refusals; see the module docstring."""

    def __init__(self, cache: CoalescingCache[K, V]) -> None:
        self._cache = cache
        self._attempts: dict[asyncio.Task[V], Attempt] = {}  # shared lookups in flight
        self._own: dict[tuple[K, Requester], asyncio.Task[V]] = {}  # lookups again after a refusal

    async def get(self, key: K, lookup: Callable[[Attempt], Awaitable[V]],
                  who: Callable[[], Awaitable[Requester]]) -> V:
        """The value of *key* from the lookup in flight, or from *lookup* started now; *who* tells
        which requester this caller is, asked only when the shared lookup was refused.

        Tasks run shielded: a caller that gives up cancels nobody's lookup."""
        mine = Attempt()
        task = self._cache.join(key, lambda: lookup(mine))
        shared = self._attempts.setdefault(task, mine)
        if shared is mine:
            task.add_done_callback(self._attempts.pop)
        found = await asyncio.shield(task)
        if not shared.refused or shared is mine:
            return found
        me = await who()
        if me == shared.requester:
            return found
        return await asyncio.shield(self._again(key, me, lookup))

    def _again(self, key: K, me: Requester, lookup: Callable[[Attempt], Awaitable[V]]) -> asyncio.Task[V]:
        """*key* looked up with *me*'s credentials, one lookup for every waiter that is *me*."""
        task = self._own.get((key, me))
        if task is None:
            task = self._own[(key, me)] = asyncio.ensure_future(lookup(Attempt()))
            task.add_done_callback(lambda done: self._done(key, me, done))
        return task

    def _done(self, key: K, me: Requester, task: asyncio.Task[V]) -> None:
        del self._own[(key, me)]
        if not task.cancelled() and task.exception() is None:
            self._cache.settle(key, task.result())
