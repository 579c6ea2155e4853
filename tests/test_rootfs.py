"""The layer scan against the real registry: links, layer shapes, entry names, the shared-layer cache."""

from __future__ import annotations

import asyncio

import pytest

from mutator import metrics
from mutator.config import from_mapping
from mutator.decide.images import ImageUser
from mutator.errors import ScanLimitExceeded
from mutator.resolve.registry import reference, rootfs
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.registry.layercache import LayerCache
from mutator.resolve.registry.layerscan import LayerFacts, closure
from tests.support import rootfs_images
from tests.support.images import Pusher, group, layer, passwd
from tests.support.resolving import make_resolver, open_session

pytestmark = pytest.mark.registry
session = pytest.fixture(open_session)
CASES = {case.name: case for case in rootfs_images.cases()}


@pytest.fixture(scope="module")
def pushed(pusher: Pusher) -> dict[str, str]:
    return rootfs_images.push_all(pusher)


def layer_bytes() -> float:
    return metrics.LAYER_BYTES._value.get()


def layer_lookups(result: str) -> float:
    return metrics.CACHE_LOOKUPS.labels("layer", result)._value.get()


@pytest.mark.parametrize("name", list(CASES))
async def test_each_image_resolves_as_the_node_does(session, registry, pushed, name):
    case = CASES[name]
    result = await make_resolver(session, registry).lookup(pushed[name])
    assert isinstance(result, ImageUser), result
    if case.problem is None:
        assert (result.uid, result.gid, result.problem) == (case.uid, case.gid, None)
        if case.user_layer is not None:
            assert result.user_layer == case.layers[case.user_layer].digest
    else:
        assert result.uid is None and not result.runs_as_root
        assert case.problem in (result.problem or ""), result.problem


async def test_only_the_layers_a_path_needs_are_read(session, registry, pushed):
    """many-layers: the user is in layer 5 of 7; the two layers below it are never fetched."""
    config = from_mapping({"registries": {registry.host: {"plain_http": True}}})
    client = RegistryClient(session=session, registries=config.registry)
    ref = reference.parse(pushed["many-layers"])
    image = await client.image(ref, config.platform)
    files = await rootfs.account_files(client, ref, image.layers, group=False,
                                       cache=LayerCache(max_bytes=1 << 20))
    assert b"app:x:1900:1900" in files.passwd and files.passwd_layer == image.layers[4].digest
    assert files.layers_read == 3
    assert files.bytes_read == sum(d.size for d in image.layers[4:])


async def test_a_foreign_layer_below_the_answer_is_noted_not_fetched(session, registry, pushed):
    config = from_mapping({"registries": {registry.host: {"plain_http": True}}})
    client = RegistryClient(session=session, registries=config.registry)
    ref = reference.parse(pushed["foreign-below"])
    image = await client.image(ref, config.platform)
    files = await rootfs.account_files(client, ref, image.layers, group=False)
    assert files.foreign_layers == [image.layers[0].digest]
    assert files.layers_read == 1 and b"app:x:1800" in files.passwd


async def test_a_shared_base_layer_is_read_once(session, registry, pusher):
    """Two images on one big base: the second reads none of the base's bytes (issue 8)."""
    base = layer({"etc/passwd": passwd(("app", 2100, 2100)), "etc/group": group(("staff", 60))},
                 padding_files=32)
    first = pusher.image("shared/first", "v1", user="app", layers=[base, layer({"srv/a": b"a"})]).reference
    top = layer({"srv/b": b"b"})
    second = pusher.image("shared/second", "v1", user="app", layers=[base, top]).reference
    resolver = make_resolver(session, registry)

    before, misses = layer_bytes(), layer_lookups("miss")
    assert (await resolver.lookup(first)).uid == 2100
    cold = layer_bytes() - before
    assert cold > len(base.data) // 50  # the base was streamed up to passwd (its first entries)
    assert layer_lookups("miss") - misses == 2

    before, hits = layer_bytes(), layer_lookups("hit")
    result = await resolver.lookup(second)
    assert (result.uid, result.user_layer) == (2100, base.digest)
    assert layer_bytes() - before == len(top.data)  # only the second image's own layer
    assert layer_lookups("hit") - hits >= 1

    # A group name needs /etc/group, which the cached facts do not cover: one rescan, then cached.
    third = pusher.image("shared/third", "v1", user="app:staff", layers=[base, top]).reference
    before = layer_bytes()
    assert (await resolver.lookup(third)).gid == 60
    assert 0 < layer_bytes() - before <= len(base.data) + len(top.data)
    before = layer_bytes()
    fourth = pusher.image("shared/fourth", "v1", user="app:staff", layers=[base]).reference
    assert (await resolver.lookup(fourth)).gid == 60
    assert layer_bytes() == before


async def test_concurrent_scans_of_one_layer_share_one_read(session, registry, pusher):
    base = layer({"etc/passwd": passwd(("app", 2200, 2200))}, padding_files=16)
    refs = [pusher.image(f"coalesce/img{i}", "v1", user="app", layers=[base, layer({f"srv/{i}": b"x"})]
                         ).reference for i in range(6)]
    resolver = make_resolver(session, registry)
    misses, before = layer_lookups("miss"), layer_bytes()
    results = await asyncio.gather(*(resolver.lookup(ref) for ref in refs))
    assert {r.uid for r in results} == {2200}
    tops = sum(len(layer({f"srv/{i}": b"x"}).data) for i in range(6))
    read = layer_bytes() - before
    assert read <= tops + len(base.data)  # the base layer was streamed once, not six times
    assert layer_lookups("miss") - misses == 7  # six top layers and one base: the rest joined or hit


def test_the_cache_is_bounded_by_memory():
    from mutator.resolve.registry.layerscan import Entry

    cache = LayerCache(max_bytes=10_000)

    async def fill() -> None:
        for i in range(100):
            facts = LayerFacts(wanted=frozenset({"etc/passwd"}), covered=frozenset({"etc", "etc/passwd"}),
                               entries={"etc/passwd": Entry("file", content=b"x" * 1000, size=1000)})

            async def scan(_wanted: frozenset[str], facts: LayerFacts = facts) -> LayerFacts:
                return facts

            await cache.facts(f"sha256:{i:064x}", "etc/passwd", frozenset({"etc/passwd"}), scan)

    asyncio.run(fill())
    assert 0 < len(cache) < 100 and cache.bytes <= 10_000
    assert cache.peek(f"sha256:{99:064x}") is not None and cache.peek(f"sha256:{0:064x}") is None


@pytest.mark.parametrize("key", ["max_scan_bytes", "layer_cache_max_bytes"])
@pytest.mark.parametrize("value", [0, -1, "1GB", True, 1.5])
def test_the_scan_limits_are_checked_at_start(key, value):
    from mutator.config import from_mapping
    from mutator.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{key} must be (an integer|at least 1)"):
        from_mapping({key: value})
    assert getattr(from_mapping({key: 4096}), key) == 4096


def _facts(*paths: str) -> LayerFacts:
    return LayerFacts(wanted=frozenset(paths), covered=closure(frozenset(paths)))


async def test_the_cache_shares_one_read_and_survives_a_reader_that_gives_up():
    """Pure logic of the layer cache, with scans the test controls."""
    cache = LayerCache(max_bytes=1 << 20)
    started: list[frozenset[str]] = []
    reading: asyncio.Queue[frozenset[str]] = asyncio.Queue()
    release = asyncio.Event()

    async def slow_scan(wanted: frozenset[str]) -> LayerFacts:
        started.append(wanted)
        reading.put_nowait(wanted)
        await release.wait()
        return _facts(*wanted)

    want = frozenset({"etc/passwd"})
    first = asyncio.ensure_future(cache.facts("sha256:a", "etc/passwd", want, slow_scan))
    second = asyncio.ensure_future(cache.facts("sha256:a", "etc", want, slow_scan))
    await reading.get()
    release.set()
    assert (await first).covered == (await second).covered == {"etc", "etc/passwd"}
    assert len(started) == 1  # one read for both

    # A wider need rescans once for the union; the result replaces the narrower facts.
    wider = await cache.facts("sha256:a", "etc/group", want, slow_scan)
    assert started[-1] == {"etc/passwd", "etc/group"} and cache.peek("sha256:a") is wider

    # The reader's lookup gives up: its read stops, and the one waiting reads for itself.
    release.clear()
    reader = asyncio.ensure_future(cache.facts("sha256:b", "etc/passwd", want, slow_scan))
    await reading.get()  # the rescan for etc/group
    await reading.get()
    waiter = asyncio.ensure_future(cache.facts("sha256:b", "etc/passwd", want, slow_scan))
    await asyncio.sleep(0)
    reader.cancel()
    assert await asyncio.wait_for(reading.get(), 10) == want  # the waiter's own read
    release.set()
    assert "etc/passwd" in (await waiter).covered and reader.cancelled()

    async def failing(_wanted: frozenset[str]) -> LayerFacts:
        raise ScanLimitExceeded("too big")

    with pytest.raises(ScanLimitExceeded):
        await cache.facts("sha256:c", "etc/passwd", want, failing)
    assert cache.peek("sha256:c") is None  # a failure is never kept
