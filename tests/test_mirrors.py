"""A pull-through mirror in front of the registry, as containerd's hosts.toml configures one.

Two Debian ``docker-registry`` processes: the session registry (upstream) and a
second one in proxy mode (``proxy.remoteurl``) acting as the mirror. Each is
reached through the tests' own proxy, so every request is counted where it
arrives, and the mirror can be taken down or made to fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from mutator.config import from_mapping
from mutator.decide.images import ImageUser
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import layer, passwd
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def sites(registry) -> Iterator[dict[str, FaultProxy]]:
    mirror = RegistryServer(proxy_remote=registry.url).start()
    upstream, in_front_of_mirror = FaultProxy(registry.url).start(), FaultProxy(mirror.url).start()
    yield {"upstream": upstream, "mirror": in_front_of_mirror}
    upstream.stop()
    in_front_of_mirror.stop()
    mirror.stop()


@pytest.fixture
def upstream(sites) -> FaultProxy:
    sites["upstream"].reset()
    return sites["upstream"]


@pytest.fixture
def mirror(sites) -> FaultProxy:
    sites["mirror"].reset()
    return sites["mirror"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def mirrored(session: aiohttp.ClientSession, upstream: FaultProxy, mirror: FaultProxy) -> Resolver:
    config = from_mapping({"registries": {
        upstream.host: {"plain_http": True, "mirrors": [mirror.host]},
        mirror.host: {"plain_http": True},  # the mirror's own transport settings
    }})
    return Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)


@pytest.fixture(scope="module")
def image(pusher) -> str:
    pushed = pusher.image("mirrored/app", "v1", user="app",
                          layers=[layer({"etc/passwd": passwd(("app", 2500, 2500))})])
    return pushed.reference.split("/", 1)[1]


async def test_the_mirror_is_asked_first_and_upstream_not_at_all(session, upstream, mirror, image):
    result = await mirrored(session, upstream, mirror).lookup(f"{upstream.host}/{image}")
    assert isinstance(result, ImageUser) and result.uid == 2500
    at_mirror = mirror.seen()
    assert {s.method for s in at_mirror} == {"HEAD", "GET"} and len(at_mirror) >= 4  # HEAD, manifest, blobs
    assert all(s.query == f"ns={upstream.host}" for s in at_mirror)  # which registry it stands in for
    assert upstream.seen() == []


@pytest.mark.parametrize(
    "failure",
    [None, Fault("status", status=503, retry_after="1"), Fault("status", status=404)],
    ids=["mirror-down", "mirror-503", "mirror-404"],
)
async def test_upstream_answers_when_the_mirror_cannot(session, upstream, mirror, image, failure):
    if failure is None:
        mirror.refuse()
    else:
        mirror.set_fault(failure)
    result = await mirrored(session, upstream, mirror).lookup(f"{upstream.host}/{image}")
    assert isinstance(result, ImageUser) and result.uid == 2500
    manifests = [(s.method, s.query) for s in upstream.seen(lambda s: "/manifests/" in s.path)]
    assert manifests == [("HEAD", ""), ("GET", "")]  # upstream gets no ns parameter
    if failure is not None:  # tried first, once (a busy mirror is not waited for), then passed over
        assert [s.method for s in mirror.seen(lambda s: "/manifests/" in s.path)] == ["HEAD", "GET"]
