"""Registry faults, produced by a proxy the tests own in front of the real loopback registry.

For each fault: the lookup answers "temporary" with a reason that names it,
within its deadline; nothing of it is cached; and once the registry recovers
the very next lookup succeeds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import urllib3

from mutator import metrics
from mutator.config import from_mapping
from mutator.decide.images import ImageFailure, ImageUser
from mutator.resolve.registry.authn.keyring import Credential
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver
from mutator.serve.tls import self_signed
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fixtures import review, with_images
from tests.support.images import layer, passwd
from tests.support.net import wait_for
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.registry

UID = 4321


@pytest.fixture(scope="module")
def pushed(pusher) -> str:
    """REPO:TAG of an image with a named user, in the session registry."""
    ref = pusher.image("faults/app", "v1", user="app",
                       layers=[layer({"etc/passwd": passwd(("app", UID, UID))})]).reference
    return ref.split("/", 1)[1]


@pytest.fixture
def fresh(pusher, request) -> str:
    """REPO:TAG of an image no cache has seen: one per test, for the long-lived webhook."""
    tag = "".join(c if c.isalnum() else "-" for c in request.node.name)[-100:].strip("-")
    pushed = pusher.image("faults/fresh", tag, user="app",
                          layers=[layer({"etc/passwd": passwd(("app", UID, UID))})]).reference
    return pushed.split("/", 1)[1]


@pytest.fixture
def clean(fault_proxy: FaultProxy) -> Iterator[FaultProxy]:
    fault_proxy.reset()
    yield fault_proxy
    fault_proxy.reset()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def resolver_for(session: aiohttp.ClientSession, *hosts: str, tls_ca: str | None = None,
                 lookup_timeout: float = 5, auth=None) -> Resolver:
    settings = {"ca_file": tls_ca} if tls_ca else {"plain_http": True}
    config = from_mapping({"registries": {h: settings for h in hosts},
                           "lookup_timeout_seconds": lookup_timeout})
    return Resolver(client=RegistryClient(session=session, registries=config.registry, auth=auth),
                    config=config)


async def resolve_within(resolver: Resolver, image: str, seconds: float) -> tuple[object, float]:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    result = (await resolver.resolve([image], deadline=loop.time() + seconds))[image]
    return result, time.monotonic() - started


async def assert_recovers(resolver: Resolver, fault_proxy: FaultProxy, image: str) -> None:
    """Nothing of the fault was cached, and the first lookup after recovery succeeds."""
    # no answer for the image was kept; a tag's digest from a HEAD that did answer may be
    assert len(resolver.users) == 0 and not isinstance(resolver.tags.peek(image), ImageFailure)
    fault_proxy.recover()
    result, _ = await resolve_within(resolver, image, 10)
    assert isinstance(result, ImageUser) and result.uid == UID, result


FAULTS = [
    pytest.param(Fault("status", status=500), "answered HTTP 500 for the manifest", id="500"),
    pytest.param(Fault("status", status=502), "answered HTTP 502 for the manifest", id="502"),
    pytest.param(Fault("status", status=503), "answered HTTP 503 for the manifest 4 times",
                 id="503-no-retry-after"),
    pytest.param(Fault("status", status=429, retry_after="30"),
                 "answered HTTP 429 for the manifest; retry after 30 s is past the deadline", id="429-30s"),
    pytest.param(Fault("status", status=503, retry_after="Wed, 21 Oct 2099 07:28:00 GMT"),
                 "answered HTTP 503 for the manifest; retry after", id="503-http-date"),
    pytest.param(Fault("reset", match="/blobs/"), "was cut off", id="reset-mid-body"),
    pytest.param(Fault("redirect_loop"), "redirected the manifest request more than 5 times",
                 id="redirect-loop"),
]


@pytest.mark.parametrize(("fault", "reason"), FAULTS)
async def test_each_fault_is_a_temporary_failure_with_its_reason(session, clean, pushed, fault, reason):
    image = f"{clean.host}/{pushed}"
    resolver = resolver_for(session, clean.host)
    clean.set_fault(fault)
    result, waited = await resolve_within(resolver, image, 3)
    assert isinstance(result, ImageFailure) and result.temporary, result
    assert reason in result.message
    assert waited < 3
    await assert_recovers(resolver, clean, image)


async def test_refused_connection(session, clean, pushed):
    image = f"{clean.host}/{pushed}"
    resolver = resolver_for(session, clean.host)
    errors = metrics.REGISTRY_REQUESTS.labels("manifest", "error")
    before = errors._value.get()
    clean.refuse()
    result, waited = await resolve_within(resolver, image, 2)
    assert isinstance(result, ImageFailure) and result.temporary
    assert result.message == f"cannot reach {clean.host}: connection refused" and waited < 1
    assert errors._value.get() == before + 1  # counted, as a request that got no answer
    await assert_recovers(resolver, clean, image)


@pytest.mark.parametrize("kind", ["hang", "trickle"])
async def test_a_hanging_or_trickling_registry_is_cut_off_at_the_deadline(session, clean, pushed, kind):
    image = f"{clean.host}/{pushed}"
    resolver = resolver_for(session, clean.host, lookup_timeout=3)
    clean.set_fault(Fault(kind, match="/manifests/"))
    result, waited = await resolve_within(resolver, image, 2)
    assert isinstance(result, ImageFailure) and result.temporary
    assert result.message == "no answer from the registry before the admission deadline"
    assert 2 <= waited < 2.5, waited
    # the lookup goes on without the admission, bounded by its own timeout, and is not cached
    late = await resolver.lookup(image)
    assert isinstance(late, ImageFailure) and late.temporary
    assert late.message == f"registry lookup took over 3 s (waiting for the manifest from {clean.host})"
    await assert_recovers(resolver, clean, image)


async def test_retry_after_within_the_deadline_is_waited_for(session, clean, pushed):
    image = f"{clean.host}/{pushed}"
    resolver = resolver_for(session, clean.host)
    before = metrics.REGISTRY_REQUESTS.labels("manifest", "4xx")._value.get()
    clean.set_fault(Fault("status", status=429, retry_after="1", times=1, match="/manifests/"))
    result, waited = await resolve_within(resolver, image, 5)
    assert isinstance(result, ImageUser) and result.uid == UID
    assert 1 <= waited < 3
    assert metrics.REGISTRY_REQUESTS.labels("manifest", "4xx")._value.get() == before + 1


@pytest.mark.parametrize("status", [429, 503])
async def test_without_retry_after_a_short_backoff_then_recovery(session, clean, pushed, status):
    image = f"{clean.host}/{pushed}"
    resolver = resolver_for(session, clean.host)
    clean.set_fault(Fault("status", status=status, times=2, match="/manifests/"))
    result, waited = await resolve_within(resolver, image, 5)
    assert isinstance(result, ImageUser) and result.uid == UID
    assert waited < 1  # 0.1 + 0.2 s of backoff, not seconds
    assert len(clean.seen(lambda s: "/manifests/" in s.path)) >= 3


async def test_a_wait_longer_than_the_deadline_fails_now_not_at_the_deadline(session, clean, pushed):
    image = f"{clean.host}/{pushed}"
    resolver = resolver_for(session, clean.host)
    clean.set_fault(Fault("status", status=503, retry_after="5"))
    result, waited = await resolve_within(resolver, image, 2)
    assert isinstance(result, ImageFailure) and result.temporary
    assert "HTTP 503 for the manifest; retry after 5 s is past the deadline (2.0 s left)" in result.message
    assert waited < 0.5  # the reason is known at once; no point waiting for the deadline
    await assert_recovers(resolver, clean, image)


class _Bearer:
    """Sends a fixed credential: enough to see where an Authorization header travels."""

    async def headers(self, *, registry: str, url: str, repository: str,
                      credential: Credential) -> dict[str, str]:
        return {"Authorization": "Bearer not-for-other-hosts"}

    async def challenged(self, *, registry: str, url: str, repository: str, credential: Credential,
                         challenge: str, sent: str) -> bool:
        return False


async def test_redirect_to_another_loopback_host_is_followed_without_credentials(session, clean, pushed):
    image = f"{clean.host}/{pushed}"
    resolver = resolver_for(session, clean.host, auth=_Bearer())
    clean.set_fault(Fault("redirect", match="/blobs/"))
    result, _ = await resolve_within(resolver, image, 5)
    assert isinstance(result, ImageUser) and result.uid == UID
    redirected = clean.seen(lambda s: s.origin == "other")
    assert redirected and all("/blobs/" in s.path for s in redirected)
    assert all("Authorization" not in s.headers for s in redirected)
    assert all("Authorization" in s.headers for s in clean.seen(lambda s: s.origin == "main"))


async def test_a_cut_tls_handshake_is_temporary(session, registry, pushed, tmp_path):
    cert, key = self_signed(str(tmp_path), ("127.0.0.1",))
    fault_proxy = FaultProxy(registry.url, tls=(cert, key)).start()
    try:
        image = f"{fault_proxy.host}/{pushed}"
        resolver = resolver_for(session, fault_proxy.host, tls_ca=cert)
        fault_proxy.set_fault(Fault("tls_eof"))
        result, waited = await resolve_within(resolver, image, 3)
        assert isinstance(result, ImageFailure) and result.temporary, result
        assert f"TLS handshake with {fault_proxy.host} failed" in result.message and waited < 1
        await assert_recovers(resolver, fault_proxy, image)
    finally:
        fault_proxy.stop()


# -- the same faults as the API server meets them: over HTTPS, through `mutator serve` ---------


@pytest.fixture(scope="module")
def webhook(fault_proxy, tmp_path_factory) -> Iterator[WebhookProcess]:
    config = tmp_path_factory.mktemp("faults-webhook") / "config.yaml"
    config.write_text(
        f'registries:\n  "{fault_proxy.host}": {{plain_http: true}}\nlookup_timeout_seconds: 5\n'
    )
    process = WebhookProcess(config=str(config)).start()
    yield process
    assert process.stop() == 0


def admit(webhook: WebhookProcess, mode: str, image: str, uid: str) -> tuple[dict, float]:
    document = with_images(review("pod-create-kubectl-run"), {"docker.io/library/memcached:1.6": image})
    document["request"]["uid"] = uid
    http = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=webhook.cert),
                               retries=False, timeout=30)
    started = time.monotonic()
    reply = http.request("POST", f"{webhook.url}/mutate/{mode}?timeout=2s",
                         body=json.dumps(document).encode(), headers={"Content-Type": "application/json"})
    elapsed = time.monotonic() - started
    assert reply.status == 200, reply.data
    return json.loads(reply.data)["response"], elapsed


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault("hang"), "before the admission deadline"),
        (Fault("status", status=503, retry_after="30"), "HTTP 503"),
    ],
    ids=["hang", "503-retry-after-30"],
)
def test_the_webhook_answers_in_time_by_mode_and_recovers(webhook, clean, fresh, fault, reason):
    image = f"{clean.host}/{fresh}"
    clean.set_fault(fault)
    refused, elapsed = admit(webhook, "enforce", image, f"{fault.kind}-enforce")
    assert refused["allowed"] is False and elapsed < 2, elapsed
    assert "this is temporary and the request can be retried" in refused["status"]["message"]
    assert reason in refused["status"]["message"]
    warned, elapsed = admit(webhook, "warn", image, f"{fault.kind}-warn")
    assert warned["allowed"] is True and elapsed < 2 and "patch" not in warned
    assert any(reason in w for w in warned["warnings"]), warned["warnings"]

    # the lookup the admissions left behind ends once the registry is back; then a fresh one runs
    ended = "nonroot_mutator_registry_lookups_total"
    before = webhook.metric(ended)
    clean.recover()
    if fault.kind == "hang":
        wait_for(lambda: webhook.metric(ended) > before, timeout=10, what="the stuck lookup to end")
    if fault.kind == "status":  # the server exports what its registry requests met
        series = 'nonroot_mutator_registry_requests_total{kind="manifest",status_class="5xx"}'
        assert webhook.metric(series) >= 2
    patched, _ = admit(webhook, "enforce", image, f"{fault.kind}-recovered")
    assert patched["allowed"] is True
    patch = json.loads(base64.b64decode(patched["patch"]))
    assert any(op["value"] == {"runAsUser": UID, "runAsGroup": UID, "runAsNonRoot": True}
               or op.get("value") == UID for op in patch), patch
