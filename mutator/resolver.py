"""From an image reference to the uid/gid it runs as: cached, coalesced, deadline-aware.

The resolver is the only place that turns registry errors into a
:class:`~mutator.images.ImageFailure`; the policy never sees an exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from mutator import metrics, passwd
from mutator.cache import CoalescingCache
from mutator.config import Config, Platform
from mutator.errors import ImageError, InvalidReference, UnresolvableUser
from mutator.images import ImageFailure, ImageUser, Resolution
from mutator.registry import reference, rootfs, transport
from mutator.registry.client import RegistryClient
from mutator.registry.credentials import CredentialSources, PullContext
from mutator.registry.layercache import LayerCache

log = logging.getLogger(__name__)


def _cacheable(result: Resolution) -> bool:
    """Only what the image's content says is kept: an image that was missing (404) may be
    pushed a moment later, and the developer's retry must see it."""
    return isinstance(result, ImageUser)


class Resolver:
    def __init__(self, *, client: RegistryClient, config: Config,
                 credentials: CredentialSources | None = None) -> None:
        self._client = client
        self._credentials = credentials or CredentialSources()
        self._platform = config.platform
        self._lookup_timeout = config.lookup_timeout_seconds
        self.cache: CoalescingCache[Resolution] = CoalescingCache(
            maxsize=config.cache_max_entries, ttl=config.cache_ttl_seconds, keep=_cacheable
        )
        self.layers = LayerCache(max_bytes=config.layer_cache_max_bytes)
        self._max_scan_bytes = config.max_scan_bytes

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
            cached = self.cache.hit(image)
            if cached is not None:
                results[image] = cached
            else:
                waiting[image] = self.cache.join(
                    image, lambda image=image: self.lookup(image, deadline=deadline, pull=pull)
                )
        if not waiting:
            return results
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            # wait() never cancels what it waits on: a lookup outlives a caller that gives up
            await asyncio.wait(waiting.values(), timeout=remaining)
        for image, future in waiting.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                results[image] = future.result()
            else:
                results[image] = ImageFailure(
                    image, "no answer from the registry before the admission deadline", temporary=True
                )
        return results

    async def lookup(self, image: str, *, platform: Platform | None = None,
                     deadline: float | None = None, pull: PullContext | None = None) -> Resolution:
        """One uncached lookup against the registry, bounded by ``lookup_timeout_seconds``.

        *deadline* (``loop.time()`` based) is when the admission that started it
        stops waiting: the transport does not sleep for a ``Retry-After`` past it,
        because an answer nobody waits for is wasted and a clear "temporary"
        reason now is worth more. The lookup itself may still run up to its own bound.

        *pull* names the Pod whose pull credentials apply (None: only the node's sources).
        """
        started = time.perf_counter()
        bound = asyncio.get_running_loop().time() + self._lookup_timeout
        token = transport.DEADLINE.set(bound if deadline is None else min(bound, deadline))
        in_flight = transport.IN_FLIGHT.set("")
        try:
            async with asyncio.timeout(self._lookup_timeout):
                result: Resolution = await self._lookup(image, platform or self._platform, pull)
        except TimeoutError:
            stuck = transport.IN_FLIGHT.get()
            result = ImageFailure(
                image, f"registry lookup took over {self._lookup_timeout:g} s"
                + (f" (waiting for {stuck})" if stuck else ""), temporary=True
            )
        except InvalidReference as exc:
            result = ImageFailure(image, str(exc), temporary=False)
        except ImageError as exc:
            result = ImageFailure(image, str(exc), temporary=exc.temporary)
        except Exception as exc:  # a hostile registry must never crash an admission
            log.exception("unexpected error resolving %s", image)
            result = ImageFailure(image, f"unexpected error: {exc!r}", temporary=True)
        finally:
            transport.DEADLINE.reset(token)
            transport.IN_FLIGHT.reset(in_flight)
        metrics.REGISTRY_SECONDS.observe(time.perf_counter() - started)
        outcome = ("resolved" if isinstance(result, ImageUser)
                   else "temporary_failure" if result.temporary else "failed")
        metrics.REGISTRY_LOOKUPS.labels(outcome).inc()
        return result

    async def _lookup(self, image: str, platform: Platform, pull: PullContext | None) -> ImageUser:
        ref = reference.parse(image)
        client = self._client.with_credentials(await self._credentials.credentials(ref, pull=pull))
        found = await client.image(ref, platform)
        container_config = found.config.get("config")
        user = container_config.get("User") if isinstance(container_config, dict) else None
        user = user if isinstance(user, str) else ""
        facts = {"image": image, "reference": str(ref), "digest": found.digest, "user": user}

        spec = passwd.split_user(user)
        if spec is None:
            return ImageUser(**facts, uid=0, gid=0)
        files = None
        need_passwd = not spec.user_is_numeric
        if spec.needs_files:  # a number needs no layer (the kubelet checks it); an invalid one is refused
            files = await rootfs.account_files(
                client, ref, found.layers, passwd=need_passwd,
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
