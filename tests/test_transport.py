"""Registry transport: HEAD for tags, platform choice, image shapes, mutual TLS, insecure TLS.

Pure rules (Retry-After parsing, the platform matcher, config keys, index
loops) are unit tests; everything that talks to a registry talks to Debian's
``docker-registry`` on loopback, through the tests' own proxy where the test
must count requests.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from mutator import metrics
from mutator.config import Config, Platform, from_mapping
from mutator.decide.images import ImageFailure, ImageUser
from mutator.errors import ConfigError, RegistryError
from mutator.resolve.registry import platforms, reference
from mutator.resolve.registry.client import OCI_INDEX, OCI_MANIFEST, RegistryClient
from mutator.resolve.registry.transport import BACKOFF_CAP_SECONDS, retry_delay, status_class
from mutator.resolve.resolver import Resolver
from mutator.serve.tls import self_signed
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import Pusher, layer, passwd
from tests.support.registry import RegistryServer

# -- pure rules ---------------------------------------------------------------------------------


def test_retry_after_seconds_date_and_fallback():
    assert retry_delay("3", 0) == 3.0
    now = 1_700_000_000.0
    assert retry_delay(email.utils.formatdate(now + 7, usegmt=True), 0, now=now) == 7.0
    assert retry_delay(email.utils.formatdate(now - 60, usegmt=True), 0, now=now) == 0.0
    for header in (None, "", "soon", "-1"):
        assert 0.08 <= retry_delay(header, 0) <= 0.12
    assert retry_delay(None, 10) <= BACKOFF_CAP_SECONDS * 1.2


def test_status_classes():
    assert [status_class(s) for s in (None, 200, 307, 404, 503)] == ["error", "2xx", "3xx", "4xx", "5xx"]


@pytest.mark.parametrize(
    ("wanted", "order"),
    [
        ("linux/arm64/v8", ["arm64", "arm/v8", "arm/v7", "arm/v6", "arm/v5"]),
        ("linux/arm64", ["arm64", "arm/v8", "arm/v7", "arm/v6", "arm/v5"]),
        ("linux/arm64/v8.2", ["arm64/v8.2", "arm64/v8.1", "arm64", "arm/v8", "arm/v7", "arm/v6", "arm/v5"]),
        ("linux/arm/v7", ["arm/v7", "arm/v6", "arm/v5"]),
        ("linux/arm", ["arm/v7", "arm/v6", "arm/v5"]),
        ("linux/amd64", ["amd64", "386"]),
        ("linux/amd64/v3", ["amd64/v3", "amd64/v2", "amd64", "386"]),
        ("linux/x86_64", ["amd64", "386"]),
    ],
)
def test_preference_follows_containerds_platform_vector(wanted, order):
    got = ["/".join(p for p in key[1:] if p) for key in platforms.preference(Platform.parse(wanted))]
    assert got == order


@pytest.mark.parametrize(
    ("entry", "wanted", "rank"),
    [
        ({"os": "linux", "architecture": "arm64"}, "linux/arm64/v8", 0),  # no variant ≡ v8
        ({"os": "linux", "architecture": "aarch64", "variant": "8"}, "linux/arm64/v8", 0),
        ({"os": "Linux", "architecture": "x86_64"}, "linux/amd64", 0),
        ({"os": "linux", "architecture": "arm", "variant": "v6"}, "linux/arm/v7", 1),
        ({"os": "linux", "architecture": "armhf"}, "linux/arm/v7", 0),
        ({"os": "linux", "architecture": "arm", "variant": "v7"}, "linux/arm/v6", None),  # never newer
        ({"os": "linux", "architecture": "amd64", "variant": "v3"}, "linux/amd64", None),
        ({"os": "windows", "architecture": "amd64"}, "linux/amd64", None),
        ({"os": "unknown", "architecture": "unknown"}, "linux/amd64", None),  # attestation manifests
        (None, "linux/amd64", 2),  # no platform: anything, after every real match
    ],
)
def test_index_entries_rank_as_the_node_would(entry, wanted, rank):
    assert platforms.rank(entry, platforms.preference(Platform.parse(wanted))) == rank


def test_registry_transport_keys(tmp_path):
    ca, key = self_signed(str(tmp_path), ("127.0.0.1",))
    config = from_mapping({"registries": {
        "r.example": {"mirrors": ["m1.example:5000", "m2.example"], "ca_file": ca,
                      "cert_file": ca, "key_file": key, "insecure_skip_verify": True},
    }})
    settings = config.registry("r.example")
    assert settings.mirrors == ("m1.example:5000", "m2.example") and settings.insecure_skip_verify
    assert config.registry("elsewhere").mirrors == ()
    for bad, message in [
        ({"mirrors": "m1"}, "mirrors must be a list"),
        ({"mirrors": ["https://m1/x"]}, "mirrors must be a list of HOST"),
        ({"cert_file": ca}, "cert_file and key_file go together"),
        ({"key_file": str(tmp_path / "nope")}, "key_file"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_mapping({"registries": {"r.example": bad}})


async def test_index_loops_are_refused_with_a_reason():
    """Digests make a real loop a hash collision; the walk refuses one anyway (pure logic: fake fetch)."""
    client = RegistryClient(session=None, registries=Config().registry)  # type: ignore[arg-type]
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64

    def index(target: str) -> dict:
        return {"manifests": [{"digest": target, "size": 1, "mediaType": OCI_INDEX,
                               "platform": {"os": "linux", "architecture": "amd64"}}]}

    async def no_head(ref):
        return None

    for documents, reason in [({a: index(a)}, "leads back to " + a), ({a: index(b), b: index(a)}, "loop")]:
        async def fetch(ref, identifier, documents=documents):
            digest = a if identifier == "v1" else identifier
            return OCI_INDEX, digest, documents[digest]

        client.manifest = fetch  # type: ignore[method-assign]
        client.resolve_tag = no_head  # type: ignore[method-assign]
        with pytest.raises(RegistryError, match=reason):
            await client.image(reference.parse("r.example/app:v1"), Platform("linux", "amd64"))


# -- against the real registry (marked one by one: the rules above need none) -------------------

registry_tier = pytest.mark.registry


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def resolver(session: aiohttp.ClientSession, settings: dict) -> Resolver:
    config = from_mapping({"registries": settings})
    return Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)


@pytest.fixture
def counted(fault_proxy: FaultProxy) -> Iterator[FaultProxy]:
    fault_proxy.reset()
    yield fault_proxy
    fault_proxy.reset()


@pytest.fixture(scope="module")
def shapes(pusher: Pusher) -> dict[str, str]:
    """REPO:TAG (no host) of each image shape, pushed to the session registry."""
    def image(tag: str, uid: int, architecture: str = "amd64"):
        return pusher.image("shapes/multi", tag, user="app", architecture=architecture,
                            layers=[layer({"etc/passwd": passwd(("app", uid, uid))})])

    arm5, arm7, arm64 = image("arm5", 5), image("arm7", 7), image("arm64", 64, "arm64")
    amd64 = image("amd", 86)
    index = pusher.index("shapes/multi", "all", [
        (arm5, {"os": "linux", "architecture": "arm", "variant": "v5"}),
        (arm7, {"os": "linux", "architecture": "arm", "variant": "v7"}),
        (arm64, {"os": "linux", "architecture": "arm64"}),
        (amd64, {"os": "linux", "architecture": "amd64"}),
    ])
    refs = {"index": index.reference, "amd64": amd64.reference}
    # no mediaType in the documents themselves: the Content-Type and the shape say what they are
    pusher.image("shapes/plain", "base", user="app", layers=[layer({"etc/passwd": passwd(("app", 77, 77))})])
    request = urllib.request.Request(f"{pusher.base_url}/v2/shapes/plain/manifests/base",
                                     headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=30) as reply:
        manifest = {k: v for k, v in json.loads(reply.read()).items() if k != "mediaType"}
    untyped = pusher.manifest("shapes/plain", "untyped", manifest, OCI_MANIFEST)
    refs["untyped-manifest"] = untyped.reference
    refs["untyped-index"] = pusher.manifest("shapes/plain", "untyped-index", {
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": untyped.digest, "size": untyped.size,
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }, OCI_INDEX).reference
    deep = index
    for depth in range(2):
        deep = pusher.index("shapes/multi", f"deep{depth}",
                            [(deep, {"os": "linux", "architecture": "amd64"})])
    refs["too-deep"] = deep.reference
    return {name: ref.split("/", 1)[1] for name, ref in refs.items()}


@registry_tier
async def test_a_tag_is_resolved_with_head_then_fetched_by_digest(session, counted, shapes):
    image = f"{counted.host}/{shapes['amd64']}"
    before = metrics.REGISTRY_REQUESTS.labels("manifest", "2xx")._value.get()
    result = await resolver(session, {counted.host: {"plain_http": True}}).lookup(image)
    assert isinstance(result, ImageUser) and result.uid == 86
    manifests = [(s.method, s.path.rsplit("/", 1)[1])
                 for s in counted.seen(lambda s: "/manifests/" in s.path)]
    assert manifests == [("HEAD", "amd"), ("GET", result.digest)]  # the tag is never GET
    assert metrics.REGISTRY_REQUESTS.labels("manifest", "2xx")._value.get() == before + 2

    client = RegistryClient(session=session, registries=from_mapping(
        {"registries": {counted.host: {"plain_http": True}}}).registry)
    assert await client.resolve_tag(reference.parse(image)) == result.digest


@registry_tier
async def test_without_a_digest_from_head_the_tag_is_fetched_with_get(session, counted, shapes):
    image = f"{counted.host}/{shapes['amd64']}"
    counted.set_fault(Fault("status", status=405, method="HEAD"))
    result = await resolver(session, {counted.host: {"plain_http": True}}).lookup(image)
    assert isinstance(result, ImageUser) and result.uid == 86
    manifests = [(s.method, s.path.rsplit("/", 1)[1])
                 for s in counted.seen(lambda s: "/manifests/" in s.path)]
    assert manifests == [("HEAD", "amd"), ("GET", "amd")]


@registry_tier
@pytest.mark.parametrize(
    ("platform", "uid"),
    [("linux/arm64/v8", 64), ("linux/arm64", 64), ("linux/arm/v7", 7), ("linux/arm/v8", 7),
     ("linux/arm/v6", 5), ("linux/amd64/v3", 86), ("linux/x86_64", 86)],
)
async def test_the_index_entry_the_node_would_run_is_read(session, registry, shapes, platform, uid):
    found = await resolver(session, {registry.host: {"plain_http": True}}).lookup(
        f"{registry.host}/{shapes['index']}", platform=Platform.parse(platform))
    assert isinstance(found, ImageUser) and found.uid == uid, found


@registry_tier
async def test_image_shapes_without_media_type_and_too_deep_indexes(session, registry, shapes):
    lookup = resolver(session, {registry.host: {"plain_http": True}}).lookup
    for name in ("untyped-manifest", "untyped-index"):
        found = await lookup(f"{registry.host}/{shapes[name]}")
        assert isinstance(found, ImageUser) and found.uid == 77, (name, found)
    deep = await lookup(f"{registry.host}/{shapes['too-deep']}")
    assert isinstance(deep, ImageFailure) and not deep.temporary and "nest deeper than 2" in deep.message
    none = await lookup(f"{registry.host}/{shapes['index']}", platform=Platform.parse("linux/s390x"))
    assert isinstance(none, ImageFailure) and "has no linux/s390x image (it has" in none.message


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, tuple[str, str]]:
    return {name: self_signed(str(tmp_path_factory.mktemp(name)), ("127.0.0.1",))
            for name in ("server", "client")}


@registry_tier
async def test_client_certificate_for_mutual_tls(session, tls_files):
    server_cert, server_key = tls_files["server"]
    server = RegistryServer(tls_cert=server_cert, tls_key=server_key, client_cert=tls_files["client"]).start()
    try:
        context = ssl.create_default_context(cafile=server_cert)
        context.load_cert_chain(*tls_files["client"])
        pushed = Pusher(server.url, context=context).image(
            "mtls/app", "v1", user="app", layers=[layer({"etc/passwd": passwd(("app", 1600, 1600))})])
        cert, key = tls_files["client"]
        with_cert = resolver(session, {server.host: {"ca_file": server_cert, "cert_file": cert,
                                                     "key_file": key}})
        assert (await with_cert.lookup(pushed.reference)).uid == 1600
        without = await resolver(session, {server.host: {"ca_file": server_cert}}).lookup(pushed.reference)
        assert isinstance(without, ImageFailure)
    finally:
        server.stop()


@registry_tier
async def test_insecure_skip_verify_works_and_warns_once(session, tls_files, caplog):
    cert, key = tls_files["server"]
    server = RegistryServer(tls_cert=cert, tls_key=key).start()
    try:
        pushed = Pusher(server.url, context=ssl.create_default_context(cafile=cert)).image(
            "insecure/app", "v1", user="app", layers=[layer({"etc/passwd": passwd(("app", 1700, 1700))})])
        insecure = resolver(session, {server.host: {"insecure_skip_verify": True}})
        with caplog.at_level(logging.WARNING, logger="mutator.resolve.registry.transport"):
            assert (await insecure.lookup(pushed.reference)).uid == 1700
            insecure.clear()
            assert (await insecure.lookup(pushed.reference)).uid == 1700
        warnings = [r.getMessage() for r in caplog.records if "INSECURE" in r.getMessage()]
        assert len(warnings) == 1 and server.host in warnings[0]
    finally:
        server.stop()


def test_resolve_with_a_platform_missing_its_architecture_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "mutator", "resolve", "--platform", "linux", "x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "platform must be OS/ARCH[/VARIANT], got 'linux'" in result.stderr


@registry_tier
async def test_deadline_bounds_the_retry_even_without_an_admission(session, counted, shapes):
    """resolve() hands its deadline to the lookup: Retry-After beyond it fails at once."""
    image = f"{counted.host}/{shapes['amd64']}"
    counted.set_fault(Fault("status", status=429, retry_after="3"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = (await resolver(session, {counted.host: {"plain_http": True}}).resolve(
        [image], deadline=loop.time() + 1))[image]
    assert isinstance(result, ImageFailure) and result.temporary and "HTTP 429" in result.message
    assert loop.time() - started < 0.5


@registry_tier
async def test_without_a_deadline_a_long_retry_after_is_not_waited_for(session, counted, shapes):
    """A caller with no deadline (a tool using the client directly) still never sleeps for hours."""
    counted.set_fault(Fault("status", status=503, retry_after="86400"))
    client = RegistryClient(session=session, registries=from_mapping(
        {"registries": {counted.host: {"plain_http": True}}}).registry)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RegistryError, match="retry after 86400 s is past the deadline") as raised:
        await client.image(reference.parse(f"{counted.host}/{shapes['amd64']}"), Platform("linux", "amd64"))
    assert raised.value.temporary and loop.time() - started < 0.5
