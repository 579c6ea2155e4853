"""Tenant isolation of cached answers: a private image read with one Pod's credentials is not
answered for another Pod unless that Pod could read it too.

The image cache is shared by every namespace: without this gate, namespace B
could learn (and run under the uid of) an image only namespace A's pull secret
can read, just because A resolved it first. The idea is the kubelet's "ensure
secret pulled images" (KEP-2535):

* every successful lookup records, per repository, *who* read it: "anonymous"
  (the image is public: every later hit is free, no request at all), or the
  fingerprints of the credentials it was offered;
* a hit for a requester whose credentials are not on record is checked with a
  manifest ``HEAD`` of the cached digest, made with that requester's own
  credentials (or anonymously when it has none), exactly as its own lookup would
  have been. The outcome is kept per (credentials, repository) for
  ``access_check_ttl_seconds`` and concurrent checks of one key are coalesced;
* a refused check answers exactly as a lookup without those credentials would:
  the same "requires authentication" failure, so enforce refuses the Pod.

A requester is identified by the fingerprints of every credential the chain
offers it for that image, in order: two Pods offered the same credentials get
the same answer from the registry, so one's proof serves the other.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cachetools import TTLCache

from mutator import metrics
from mutator.decide.images import ImageFailure, ImageUser, Resolution
from mutator.errors import DeadlineExceeded, ImageError, InvalidReference, RegistryError
from mutator.resolve.registry import reference
from mutator.resolve.registry.authn.credentials import CredentialSources, PullContext
from mutator.resolve.registry.authn.keyring import Credential
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.registry.reference import Reference

log = logging.getLogger(__name__)

ANONYMOUS = ("anonymous",)
Requester = tuple[str, ...]

_HIT = metrics.CACHE_LOOKUPS.labels("access", "hit")
_MISS = metrics.CACHE_LOOKUPS.labels("access", "miss")
_COALESCED = metrics.CACHE_LOOKUPS.labels("access", "coalesced")
_ENTRIES = metrics.CACHE_ENTRIES.labels("access")


@functools.lru_cache(maxsize=4096)
def requester(credentials: tuple[Credential, ...]) -> Requester:
    """Who asks, as the registry will see it: the fingerprints of what is offered, or anonymous.

    Cached: a fingerprint is an HMAC, and every hit for a private image asks.
    """
    return tuple(c.fingerprint for c in credentials) or ANONYMOUS


# Canonical references, parsed once: hits ask for the same few again and again.
_parse = functools.lru_cache(maxsize=4096)(reference.parse)


def _repository(text: str) -> tuple[str, str]:
    """(registry, repository) of a canonical reference."""
    ref = _parse(text)
    return ref.registry, ref.repository


@dataclass(slots=True)
class _Grant:
    """Who read a repository's images through a lookup, until ``expires`` (``time.monotonic()``)."""

    expires: float
    public: bool = False
    requesters: set[Requester] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a requester may not read a repository; ``reason`` without the image it was found for."""

    reason: str


class AccessGate:
    """Decides whether a cached or shared answer may be given to a Pod; see the module docstring."""

    def __init__(self, *, client: RegistryClient, credentials: CredentialSources, check_ttl: float,
                 grant_ttl: float, maxsize: int) -> None:
        self._client = client
        self._credentials = credentials
        # A plain dict with its own expiry: the public check is on the warm path, and a TTLCache
        # lookup costs about a microsecond where a dict lookup costs a few dozen nanoseconds.
        self._grants: dict[tuple[str, str], _Grant] = {}
        self._grant_ttl = grant_ttl
        self._max_grants = maxsize
        # (requester, registry, repository) -> None when readable, else why not
        self._checks: TTLCache[tuple[Requester, str, str], _Refusal | None] = TTLCache(
            maxsize=maxsize, ttl=check_ttl)
        self._inflight: dict[tuple[Requester, str, str], asyncio.Task[_Refusal | None]] = {}

    def proved(self, ref: Reference, credentials: Sequence[Credential]) -> None:
        """A lookup offered *credentials* and read *ref*: record who may be answered freely."""
        key = (ref.registry, ref.repository)
        grant = self._grant(key)
        if grant is None:
            if len(self._grants) >= self._max_grants:  # the oldest goes: dicts keep insertion order
                del self._grants[next(iter(self._grants))]
            grant = self._grants[key] = _Grant(time.monotonic() + self._grant_ttl)
        who = requester(tuple(credentials))
        if who == ANONYMOUS:
            grant.public = True
        else:
            grant.requesters.add(who)

    async def screen(self, results: Mapping[str, Resolution], *, pull: PullContext,
                     deadline: float) -> dict[str, Resolution]:
        """*results* as *pull*'s Pod may see them: answers it cannot prove access to become failures.

        Answers by *deadline* (``loop.time()`` based); a check still running then is a
        temporary failure for this Pod and goes on to fill the check cache for its retry.
        """
        unproved = [image for image, result in results.items()
                    if isinstance(result, ImageUser) and not self.public(result)]
        if not unproved:  # the warm path for public images: no await, no copy beyond this one
            return dict(results)
        screened = dict(results)
        checks: dict[str, tuple[asyncio.Task[_Refusal | None], Reference]] = {}
        late = set(unproved)
        try:
            async with asyncio.timeout_at(deadline):
                for image in unproved:
                    verdict = await self._admit(results[image], pull=pull)  # type: ignore[arg-type]
                    if isinstance(verdict, tuple):
                        checks[image] = verdict
                    else:
                        screened[image] = verdict
                        late.discard(image)
                if checks:  # wait() never cancels the shared checks, only this wait
                    await asyncio.wait([task for task, _ in checks.values()])
        except TimeoutError:
            pass
        for image, (task, ref) in checks.items():
            if task.done():
                screened[image] = _verdict(results[image], ref, task)  # type: ignore[arg-type]
                late.discard(image)
        for image in late:
            screened[image] = ImageFailure.of(image, DeadlineExceeded(
                "no answer from the registry before the admission deadline "
                "(checking this Pod's access to the image)"))
        return screened

    def _grant(self, key: tuple[str, str]) -> _Grant | None:
        grant = self._grants.get(key)
        if grant is not None and grant.expires <= time.monotonic():
            del self._grants[key]
            return None
        return grant

    def public(self, result: ImageUser) -> bool:
        """True when a lookup of *result*'s repository without credentials succeeded, and that is
        still on record: every Pod may be given the answer, no check is made for it."""
        try:
            grant = self._grant(_repository(result.reference))
        except InvalidReference:
            return False  # admit() turns it into a failure: never an answer without a check
        return grant is not None and grant.public

    async def _admit(self, result: ImageUser, *, pull: PullContext
                     ) -> Resolution | tuple[asyncio.Task[_Refusal | None], Reference]:
        """*result* if *pull*'s Pod may read the image, the failure its own lookup would have met
        if it may not, or the check (a task, shared) still to wait for."""
        try:
            ref = _parse(result.reference)
        except InvalidReference as exc:
            return ImageFailure(result.image, str(exc), temporary=False)
        repo = (ref.registry, ref.repository)
        credentials = await self._credentials.credentials(ref, pull=pull)
        who = requester(tuple(credentials))
        grant = self._grant(repo)
        if grant is not None and (grant.public or who in grant.requesters):
            return result
        key = (who, *repo)
        if key in self._checks:
            _HIT.inc()
            refusal = self._checks[key]
            return result if refusal is None else _refused(result, ref, refusal)
        task = self._inflight.get(key)
        if task is not None:
            _COALESCED.inc()
            return task, ref
        _MISS.inc()
        task = self._inflight[key] = asyncio.ensure_future(self._check(ref, result.digest, credentials, key))
        task.add_done_callback(lambda done: self._checked(key, done))
        return task, ref

    def _checked(self, key: tuple[Requester, str, str], task: asyncio.Task[_Refusal | None]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled() and task.exception() is not None:  # retrieved even if every waiter left
            log.info("access check of %s/%s failed: %s", key[1], key[2], task.exception())

    async def _check(self, ref: Reference, digest: str, credentials: Sequence[Credential],
                     key: tuple[Requester, str, str]) -> _Refusal | None:
        """One manifest HEAD with the requester's credentials; a definite answer is cached."""
        try:
            await self._client.with_credentials(credentials).readable(ref, digest)
        except RegistryError as exc:
            if exc.temporary or exc.status not in (401, 403, 404):
                raise
            # the same words a lookup without these credentials would have met, for any tag of the repo
            refusal: _Refusal | None = _Refusal(str(exc).removeprefix(f"{ref}: "))
        else:
            refusal = None
            if key[0] == ANONYMOUS:  # readable by anyone: later hits need no check at all
                self.proved(ref, ())
        self._checks[key] = refusal
        _ENTRIES.set(len(self._checks))
        return refusal


def _refused(result: ImageUser, ref: Reference, refusal: _Refusal) -> ImageFailure:
    return ImageFailure(result.image, f"{ref}: {refusal.reason}", temporary=False)


def _verdict(result: ImageUser, ref: Reference, task: asyncio.Task[_Refusal | None]) -> Resolution:
    """What a finished check means for *result*."""
    if task.cancelled():
        return ImageFailure(result.image, "the access check was cancelled", temporary=True)
    error = task.exception()
    if error is not None:  # the registry is down or slow: neither yes nor no
        return ImageFailure(result.image, str(error) or type(error).__name__,
                            temporary=not isinstance(error, ImageError) or error.temporary)
    refusal = task.result()
    return result if refusal is None else _refused(result, ref, refusal)
