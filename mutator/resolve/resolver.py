"""From an image reference to the uid/gid it runs as: cached, coalesced, deadline-aware.

Two caches, each keyed by what can change behind its key:

- ``tags``: the image as a Pod names it (``app:1.2``) → the digest it pointed at,
  trusted for ``cache_ttl_seconds`` so that a re-pushed tag is noticed;
- ``users``: digest → what that image runs as. Content-addressed, so it never
  goes stale; least recently used entries go past ``cache_max_entries``.

An image pinned by digest (``app@sha256:…``) skips the tag step entirely. Both
steps are coalesced (one lookup in flight per tag and per digest, whoever asks;
a refusal is shared only among those offering the same credentials, see
:mod:`mutator.resolve.sharing`) and run as tasks that outlive an admission whose deadline
passed, so the controller's retry finds the answer cached.

The resolver is the only place that turns registry errors into an
:class:`~mutator.decide.images.ImageFailure`; the policy never sees an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from cachetools import LRUCache

from mutator import logs, metrics
from mutator.config import Config, Platform
from mutator.decide import passwd
from mutator.decide.images import ImageFailure, ImageUser, Resolution
from mutator.errors import DeadlineExceeded, ImageError, InvalidReference, UnresolvableUser
from mutator.resolve.access import AccessGate, Requester, requester
from mutator.resolve.cache import CoalescingCache
from mutator.resolve.registry import reference, rootfs, transport
from mutator.resolve.registry.authn.credentials import CredentialSources, PullContext
from mutator.resolve.registry.authn.keyring import Credential
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.registry.content import Image
from mutator.resolve.registry.layercache import LayerCache
from mutator.resolve.registry.local import LocalImages
from mutator.resolve.registry.reference import Reference
from mutator.resolve.sharing import Attempt, SharedLookups

log = logging.getLogger(__name__)
T = TypeVar("T")
DEADLINE_MESSAGE = "no answer from the registry before the admission deadline"


@dataclasses.dataclass(frozen=True, slots=True)
class Tagged:
    """What an image name pointed at. ``manifest`` (the document fetched to learn the digest)
    travels from the tag step to the image step of one lookup and is never cached."""

    digest: str
    reference: str
    manifest: tuple[str, str, dict[str, Any]] | None = None


# A tag entry: the digest alone when the canonical reference is the name itself (a name with its
# registry and tag spelled out: the usual case for private images), else what the name pointed at.
TagEntry = str | Tagged


def _keep_tag(image: str, found: TagEntry | ImageFailure) -> TagEntry | None:
    if not isinstance(found, Tagged):
        return None
    return found.digest if found.reference == image else Tagged(found.digest, found.reference)


def _tagged(image: str, entry: TagEntry | ImageFailure | None) -> Tagged | ImageFailure | None:
    """A tag entry as the steps after it take it (off the warm path: this allocates)."""
    return Tagged(entry, image) if isinstance(entry, str) else entry


def _keep_user(_: str, result: Resolution) -> Resolution | None:
    """Only what the image's content says is kept: an image that was missing (404) may be
    pushed a moment later, and a registry that failed may answer the next admission."""
    return result if isinstance(result, ImageUser) else None


class Resolver:
    def __init__(self, *, client: RegistryClient, config: Config,
                 credentials: CredentialSources | None = None) -> None:
        self._client = client
        self._credentials = credentials or CredentialSources()
        # One shared cache for every namespace: the gate keeps private answers to those who may read them.
        self.access = AccessGate(client=client, credentials=self._credentials,
                                 check_ttl=config.access_check_ttl_seconds,
                                 grant_ttl=config.cache_ttl_seconds, maxsize=config.cache_max_entries)
        self._platform = config.platform
        self._lookup_timeout = config.lookup_timeout_seconds
        size = config.cache_max_entries
        self.tags: CoalescingCache[str, TagEntry | ImageFailure] = CoalescingCache.ttl(
            "tag", maxsize=size, ttl=config.cache_ttl_seconds, keep=_keep_tag
        )
        self.layers = LayerCache(max_bytes=config.layer_cache_max_bytes)
        self._max_scan_bytes = config.max_scan_bytes
        self.users: CoalescingCache[str, Resolution] = CoalescingCache.lru(
            "image", maxsize=size, keep=_keep_user
        )
        self._tag_lookups = SharedLookups(self.tags)
        self._user_lookups = SharedLookups(self.users)
        # Digest-pinned names, parsed once: nothing behind them can change.
        self._pinned: LRUCache[str, Tagged] = LRUCache(maxsize=size)
        self._background: set[asyncio.Task[Resolution]] = set()
        # Images the command line named as an OCI layout or docker save archive, opened by it.
        # Only a command fills this: an image name in a Pod never makes the server read a file.
        self.local: dict[str, LocalImages] = {}
        # Bumped when every answer given so far is to be forgotten (clear()): whoever keeps
        # answers of its own (the decisions memo) reads it, to stop trusting them at once.
        self.epoch = 0

    @property
    def lookup_timeout(self) -> float:
        """Seconds one lookup may run (``lookup_timeout_seconds``): how long a caller without an
        admission's deadline waits for an answer."""
        return self._lookup_timeout

    def clear(self) -> None:
        """Forget every cached answer (lookups in flight go on), and start a new :attr:`epoch`."""
        self.epoch += 1
        self.tags.clear()
        self.users.clear()
        self._pinned.clear()

    def cached(self, image: str) -> Resolution | None:
        """The warm path: what *image* runs as if both steps are cached; no await, no registry."""
        known = self._pinned.get(image) if "@" in image else self.tags.hit(image)
        if type(known) is str:
            digest, ref = known, image
        elif isinstance(known, Tagged):
            digest, ref = known.digest, known.reference
        else:
            return None
        found = self.users.hit(digest)
        if isinstance(found, ImageUser) and found.image != image:
            # the same content under another name: answer in that name's terms
            found = dataclasses.replace(found, image=image, reference=ref)
        return found

    def reusable(self, answers: Iterable[Resolution]) -> bool:
        """True when every answer may be given to any Pod again without asking: each an image's
        user, read from a public repository (no Pod's credentials stand between it and a caller)."""
        return all(isinstance(a, ImageUser) and a.image not in self.local and self.access.public(a)
                   for a in answers)

    def peek(self, image: str) -> Resolution | None:
        """What *image* is cached as, uncounted: for logs, which must not move the hit ratio."""
        known = self._pinned.get(image) if "@" in image else _tagged(image, self.tags.peek(image))
        return self.users.peek(known.digest) if isinstance(known, Tagged) else None

    async def resolve(self, images: Iterable[str], *, deadline: float,
                      pull: PullContext | None = None) -> dict[str, Resolution]:
        """Resolve every image, answering for each by *deadline* (``loop.time()`` based).

        An image not resolved by then is a temporary failure for this caller; its
        lookup goes on (bounded by ``lookup_timeout_seconds``) and fills the cache
        for the retry.
        """
        results: dict[str, Resolution] = {}
        waiting: dict[str, asyncio.Task[Resolution]] = {}
        for image in images:
            found = self.cached(image)
            if found is not None:
                results[image] = found
            else:
                waiting[image] = self.start(image, deadline=deadline, pull=pull)
        if not waiting:
            return await self.access.screen(results, pull=pull, deadline=deadline) if pull else results
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            # wait() never cancels what it waits on: a lookup outlives a caller that gives up
            await asyncio.wait(waiting.values(), timeout=remaining)
        for image, task in waiting.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                results[image] = task.result()
            else:
                results[image] = ImageFailure.of(image, DeadlineExceeded(DEADLINE_MESSAGE))
        return await self.access.screen(results, pull=pull, deadline=deadline) if pull else results

    def start(self, image: str, *, deadline: float | None = None,
              pull: PullContext | None = None) -> asyncio.Task[Resolution]:
        """Look *image* up in the background (after :meth:`cached` missed); the task is held
        here until it ends, so nobody needs to keep waiting on it. *deadline*, *pull*: see :meth:`lookup`."""
        task = asyncio.ensure_future(self._resolve_cold(image, deadline, pull))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _resolve_cold(self, image: str, deadline: float | None, pull: PullContext | None) -> Resolution:
        """tag → digest → user, each step shared with whoever needs it at the same time (a refusal
        only with those offering the same credentials: see :mod:`mutator.resolve.sharing`)."""
        if image in self.local:
            return await self._lookup_local(image, self.local[image])
        try:
            ref = reference.parse(image)
        except InvalidReference as exc:
            return ImageFailure(image, str(exc), temporary=False)
        if ref.digest is not None:
            known: Tagged | ImageFailure | None = Tagged(ref.digest, str(ref))
            self._pinned[image] = known
        else:
            known = _tagged(image, self.tags.peek(image))  # cached while the user entry was evicted
            if known is None:
                known = await self._tag_lookups.get(
                    image, lambda attempt: self._fetch_tag(image, ref, deadline, pull, attempt),
                    lambda: self._requester(ref, pull))
        if isinstance(known, ImageFailure):
            return known
        found = self.users.hit(known.digest)  # another name for the same content may have it
        if found is None:
            tagged = known
            found = await self._user_lookups.get(
                known.digest, lambda attempt: self.lookup(image, tagged=tagged, deadline=deadline,
                                                          pull=pull, attempt=attempt),
                lambda: self._requester(ref, pull))
        if isinstance(found, ImageUser) and found.image != image:
            found = dataclasses.replace(found, image=image, reference=known.reference)
        return found

    async def _fetch_tag(self, image: str, ref: Reference, deadline: float | None,
                         pull: PullContext | None, attempt: Attempt) -> Tagged | ImageFailure:
        """The digest a tag points at now: a manifest HEAD, or a GET where the registry gives no
        digest that way (the manifest fetched then is handed to the image step)."""
        async def fetch() -> Tagged:
            canonical = str(ref)
            name = image if canonical == image else canonical  # one string object when they match
            client, credentials = await self._client_for(ref, pull, attempt)
            digest = await client.resolve_tag(ref)
            if digest is None:
                manifest = await client.manifest(ref, ref.identifier)
                self.access.proved(ref, credentials)
                return Tagged(manifest[1], name, manifest)
            self.access.proved(ref, credentials)
            return Tagged(digest, name)

        return await self._bounded(image, fetch(), deadline=deadline, attempt=attempt)

    async def lookup(self, image: str, *, platform: Platform | None = None,
                     tagged: Tagged | None = None, deadline: float | None = None,
                     pull: PullContext | None = None, attempt: Attempt | None = None) -> Resolution:
        """One uncached lookup against the registry, bounded by ``lookup_timeout_seconds``.

        With *tagged* the tag step is done: the image is read at that digest (from
        the manifest already fetched, if it came along).

        *deadline* (``loop.time()`` based) is when the admission that started it
        stops waiting: the transport does not sleep for a ``Retry-After`` past it,
        because an answer nobody waits for is wasted and a clear "temporary"
        reason now is worth more. The lookup itself may still run up to its own bound.

        *pull* names the Pod whose pull credentials apply (None: only the node's sources);
        *attempt* learns which credentials those were and whether the registry refused them.
        """
        if image in self.local:
            return await self._lookup_local(image, self.local[image], platform=platform)
        started = time.perf_counter()
        work = self._read_image(image, platform or self._platform, tagged, pull, attempt)
        result = await self._bounded(image, work, deadline=deadline, attempt=attempt)
        metrics.REGISTRY_SECONDS.observe(time.perf_counter() - started)
        if isinstance(result, ImageUser):
            metrics.REGISTRY_LOOKUPS.labels("resolved").inc()
        return result

    async def _bounded(self, image: str, work: Awaitable[T], *, deadline: float | None,
                       attempt: Attempt | None = None) -> T | ImageFailure:
        """*work* within ``lookup_timeout_seconds``; every error becomes an :class:`ImageFailure`."""
        started = time.perf_counter()
        bound = asyncio.get_running_loop().time() + self._lookup_timeout
        token = transport.DEADLINE.set(bound if deadline is None else min(bound, deadline))
        in_flight = transport.IN_FLIGHT.set("")
        try:
            async with asyncio.timeout(self._lookup_timeout):
                return await work
        except TimeoutError:
            stuck = transport.IN_FLIGHT.get()
            failure = ImageFailure(
                image, f"registry lookup took over {self._lookup_timeout:g} s"
                + (f" (waiting for {stuck})" if stuck else ""), temporary=True
            )
        except InvalidReference as exc:
            failure = ImageFailure(image, str(exc), temporary=False)
        except ImageError as exc:
            failure = ImageFailure.of(image, exc)
            if attempt is not None:
                attempt.failed(exc)
        except Exception as exc:  # a hostile registry must never crash an admission
            # one line with the type; the traceback only when debugging (-v)
            log.error("unexpected error resolving %s: %s: %s", image, type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            failure = ImageFailure(image, f"unexpected error: {exc!r}", temporary=True)
        finally:
            transport.DEADLINE.reset(token)
            transport.IN_FLIGHT.reset(in_flight)
        logs.registry_failure(failure, seconds=time.perf_counter() - started)
        metrics.REGISTRY_LOOKUPS.labels("temporary_failure" if failure.temporary else "failed").inc()
        return failure

    async def _client_for(self, ref: Reference, pull: PullContext | None, attempt: Attempt | None
                          ) -> tuple[RegistryClient, tuple[Credential, ...]]:
        """The client for one lookup, offering the credentials that apply to *ref* and *pull*
        (returned too: a read that succeeds with them is recorded by the access gate)."""
        credentials = tuple(await self._credentials.credentials(ref, pull=pull))
        if attempt is not None:
            attempt.offered(credentials)
        return self._client.with_credentials(credentials), credentials

    async def _requester(self, ref: Reference, pull: PullContext | None) -> Requester:
        """Who *pull*'s lookup of *ref* is to the registry: told apart from the one that was refused."""
        return requester(tuple(await self._credentials.credentials(ref, pull=pull)))

    async def _read_image(self, image: str, platform: Platform, tagged: Tagged | None,
                          pull: PullContext | None, attempt: Attempt | None) -> ImageUser:
        ref = reference.parse(image)
        client, credentials = await self._client_for(ref, pull, attempt)
        if tagged is None:
            found = await client.image(ref, platform)
        elif tagged.manifest is not None:
            found = await client.image(ref, platform, manifest=tagged.manifest)
        else:
            found = await client.image(dataclasses.replace(ref, digest=tagged.digest), platform)
        self.access.proved(ref, credentials)
        # one string object where the name is already canonical: every cached image holds it
        canonical = tagged.reference if tagged is not None else str(ref)
        # and one digest object with the tag entry and the cache key
        digest = tagged.digest if tagged is not None and tagged.digest == found.digest else found.digest
        return await self._user_of(image, client, found, canonical=canonical, digest=digest)

    async def _lookup_local(self, image: str, source: LocalImages, *,
                           platform: Platform | None = None) -> Resolution:
        """*image* read from a local OCI layout or ``docker save`` archive instead of a registry:
        the same manifest walk, layer scan, merged tree and USER rules, bounded the same way."""
        async def read() -> ImageUser:
            found = await source.image(source.reference, platform or self._platform)
            return await self._user_of(image, source, found, canonical=image, digest=found.digest)

        return await self._bounded(image, read(), deadline=None)

    async def _user_of(self, image: str, client: RegistryClient, found: Image, *, canonical: str,
                       digest: str) -> ImageUser:
        """What *found* (its config and layers, read through *client*) runs as."""
        container_config = found.config.get("config")
        user = container_config.get("User") if isinstance(container_config, dict) else None
        user = user if isinstance(user, str) else ""
        # a USER shared by many images (node, nonroot, app) is one string, not one per image
        facts = {"image": image, "reference": image if canonical == image else canonical,
                 "digest": digest, "user": sys.intern(user)}

        spec = passwd.split_user(user)
        if spec is None:
            return ImageUser(**facts, uid=0, gid=0)
        files = None
        need_passwd = not spec.user_is_numeric
        if spec.needs_files:  # a number needs no layer (the kubelet checks it); an invalid one is refused
            files = await rootfs.account_files(
                client, found.reference, found.layers, passwd=need_passwd,
                group=spec.group is not None and not spec.group_is_numeric,
                cache=self.layers, max_scan_bytes=self._max_scan_bytes,
            )
            problem = (files.passwd_problem if need_passwd else None) or files.group_problem
            if problem:
                return ImageUser(**facts, uid=None, gid=None, problem=f"cannot read the user: {problem}")
        try:
            identity = passwd.resolve(spec, passwd=files.passwd if files else None,
                                      group=files.group if files else None)
        except UnresolvableUser as exc:
            return ImageUser(**facts, uid=None, gid=None, problem=str(exc))
        return ImageUser(**facts, uid=identity.uid, gid=identity.gid,
                         user_layer=files.passwd_layer if files is not None and need_passwd else None)
