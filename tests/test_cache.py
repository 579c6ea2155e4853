"""The cache rules and coalescing, counted at the registry: every request passes a counting proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from mutator import metrics
from mutator.decide.images import ImageFailure, ImageUser
from mutator.resolve.resolver import DEADLINE_MESSAGE, Tagged
from tests.support.images import Pushed, Pusher, layer, passwd
from tests.support.proxy import CountingProxy
from tests.support.registry import RegistryServer
from tests.support.resolving import make_resolver, open_session

pytestmark = pytest.mark.registry


@pytest.fixture
async def proxy(registry: RegistryServer) -> AsyncIterator[CountingProxy]:
    counting = await CountingProxy(registry.url).start()
    yield counting
    await counting.stop()


session = pytest.fixture(open_session)


def via(proxy: CountingProxy, pushed: Pushed | str) -> str:
    """The pushed image's name as seen through the proxy."""
    name = pushed.reference if isinstance(pushed, Pushed) else pushed
    return f"{proxy.host}/{name.split('/', 1)[1]}"


def push_user(pusher: Pusher, repository: str, uid: int, *, tag: str = "v1", padding: int = 0) -> Pushed:
    layers = [layer({"etc/passwd": passwd(("app", uid, uid))}), layer({"srv/x": b"x"}, padding_files=padding)]
    return pusher.image(repository, tag, user="app", layers=layers)


def deadline(seconds: float = 10) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_500_concurrent_resolves_make_one_request_per_manifest_and_blob(session, proxy, pusher):
    pushed = push_user(pusher, "cache/herd", 1000, padding=16)
    image = via(proxy, pushed)
    resolver = make_resolver(session, proxy)
    results = await asyncio.gather(*(resolver.resolve([image], deadline=deadline()) for _ in range(500)))
    assert {r[image].uid for r in results} == {1000}
    # one HEAD for the tag, one GET of the manifest by digest, one of the config, two layers
    assert proxy.count("/manifests/v1", "HEAD") == 1
    assert proxy.count(f"/manifests/{pushed.digest}") == 1 and proxy.count("/blobs/") == 3
    assert set(proxy.requests.values()) == {1} and sum(proxy.requests.values()) == 5, proxy.requests


async def test_coalescing_outlives_the_first_deadline_and_fills_the_cache(session, registry, pusher):
    pushed = push_user(pusher, "cache/slow", 1300)
    slow = await CountingProxy(registry.url, blob_delay=0.4).start()
    try:
        image = via(slow, pushed)
        resolver = make_resolver(session, slow)
        first = (await resolver.resolve([image], deadline=deadline(0.1)))[image]
        assert isinstance(first, ImageFailure) and first.message == DEADLINE_MESSAGE
        # the controller's retry, while the lookup goes on: it joins the same lookup
        retry = (await resolver.resolve([image], deadline=deadline()))[image]
        assert isinstance(retry, ImageUser) and retry.uid == 1300
        assert slow.count("/manifests/", "HEAD") == 1 and slow.count("/manifests/") == 1
        assert slow.count("/blobs/") == 3
        coalesced = metrics.CACHE_LOOKUPS.labels("tag", "coalesced")._value.get()
        again = (await resolver.resolve([image], deadline=deadline(0.001)))[image]
        assert again is retry or again == retry  # cached: no wait, no request
        assert slow.count("/manifests/") == 1 and slow.count("/manifests/", "HEAD") == 1
        assert metrics.CACHE_LOOKUPS.labels("tag", "coalesced")._value.get() == coalesced
    finally:
        await slow.stop()


async def test_a_digest_pinned_image_makes_no_tag_request(session, proxy, pusher):
    pushed = push_user(pusher, "cache/pinned", 1100)
    image = via(proxy, pushed.by_digest)
    resolver = make_resolver(session, proxy)
    result = (await resolver.resolve([image], deadline=deadline()))[image]
    assert isinstance(result, ImageUser) and (result.uid, result.digest) == (1100, pushed.digest)
    assert proxy.count("/manifests/v1", "HEAD") == 0 and proxy.count("/manifests/v1") == 0
    assert proxy.count(f"/manifests/{pushed.digest}") == 1
    assert len(resolver.tags) == 0
    proxy.reset()
    again = (await resolver.resolve([image], deadline=deadline()))[image]
    assert again.uid == 1100 and sum(proxy.requests.values()) == 0


async def test_the_tag_ttl_is_honoured(session, proxy, pusher):
    """A re-pushed tag is not seen before the TTL (no request at all) and is seen after it."""
    ttl = 0.5
    image = via(proxy, push_user(pusher, "cache/repush", 1000))
    resolver = make_resolver(session, proxy, cache_ttl_seconds=ttl)
    asked_at = time.monotonic()  # the entry's TTL starts after this, when the answer arrives
    assert (await resolver.resolve([image], deadline=deadline()))[image].uid == 1000
    repushed = push_user(pusher, "cache/repush", 2000)
    proxy.reset()
    assert (await resolver.resolve([image], deadline=deadline()))[image].uid == 1000
    assert sum(proxy.requests.values()) == 0
    uid = 1000
    for _ in range(100):  # bounded: the TTL is 0.5 s, the loop allows 5 s
        await asyncio.sleep(0.05)
        result = (await resolver.resolve([image], deadline=deadline()))[image]
        uid = result.uid
        if uid == 2000:
            break
    assert uid == 2000 and time.monotonic() - asked_at >= ttl
    assert result.digest == repushed.digest
    assert proxy.count("/manifests/v1", "HEAD") == 1  # the tag was asked again once, after the TTL


async def test_transient_errors_are_not_kept(session, proxy, pusher):
    image = via(proxy, push_user(pusher, "cache/flaky", 1200))
    resolver = make_resolver(session, proxy)
    for status in (503, 429):
        proxy.fail_status = status
        failed = (await resolver.resolve([image], deadline=deadline()))[image]
        assert isinstance(failed, ImageFailure) and failed.temporary and str(status) in failed.message
        assert resolver.tags.peek(image) is None and len(resolver.users) == 0
    proxy.fail_status = None
    recovered = (await resolver.resolve([image], deadline=deadline()))[image]
    assert isinstance(recovered, ImageUser) and recovered.uid == 1200


async def test_an_image_pushed_after_a_404_is_seen_on_retry(session, proxy, pusher):
    image = f"{proxy.host}/cache/late:v1"
    resolver = make_resolver(session, proxy)
    missing = (await resolver.resolve([image], deadline=deadline()))[image]
    assert isinstance(missing, ImageFailure) and not missing.temporary and "404" in missing.message
    push_user(pusher, "cache/late", 1400)
    assert (await resolver.resolve([image], deadline=deadline()))[image].uid == 1400
    assert resolver.peek(image).uid == 1400


async def test_two_names_for_one_digest_share_the_image_entry(session, proxy, pusher):
    first = push_user(pusher, "cache/alias", 1500, tag="a")
    second = via(proxy, push_user(pusher, "cache/alias", 1500, tag="b"))
    resolver = make_resolver(session, proxy)
    await resolver.resolve([via(proxy, first)], deadline=deadline())
    proxy.reset()
    result = (await resolver.resolve([second], deadline=deadline()))[second]
    assert result.image == second and result.uid == 1500
    # only the tag was asked: the digest's answer was cached under the other name
    assert proxy.count("/manifests/b", "HEAD") == 1 and sum(proxy.requests.values()) == 1
    assert len(resolver.users) == 1 and len(resolver.tags) == 2


async def test_the_image_cache_is_bounded(session, proxy, pusher):
    resolver = make_resolver(session, proxy, cache_max_entries=2)
    names = [via(proxy, push_user(pusher, "cache/bounded", 1600 + i, tag=f"t{i}")) for i in range(3)]
    for name in names:
        await resolver.resolve([name], deadline=deadline())
    assert len(resolver.users) == 2 and len(resolver.tags) == 2
    assert metrics.CACHE_ENTRIES.labels("image")._value.get() == 2


async def test_a_tag_entry_is_the_bare_digest_unless_the_name_is_spelled_otherwise(session, proxy, pusher):
    """Memory: most names spell out registry and tag, and then the entry need not repeat the name."""
    full = via(proxy, push_user(pusher, "cache/spelled", 1500, tag="latest"))
    short = full.removesuffix(":latest")
    resolver = make_resolver(session, proxy)
    found = await resolver.resolve([full, short], deadline=deadline())
    assert type(resolver.tags.peek(full)) is str and resolver.tags.peek(full) == found[full].digest
    kept = resolver.tags.peek(short)
    assert isinstance(kept, Tagged) and (kept.digest, kept.reference) == (found[full].digest, full)
    for image in (full, short):  # the warm path answers each in its own terms
        warm = resolver.cached(image)
        assert isinstance(warm, ImageUser) and (warm.image, warm.reference, warm.uid) == (image, full, 1500)
        assert resolver.peek(image) is not None
