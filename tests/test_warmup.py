"""Warm-up: which images a stored Pod names, resolving them with bounded concurrency, and no cluster."""

from __future__ import annotations

import ssl
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from mutator import metrics
from mutator.config import Config, from_mapping
from mutator.errors import ConfigError
from mutator.resolve.registry.authn.credentials import PullContext
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver
from mutator.serve import warmup
from tests.support.images import layer, passwd
from tests.support.net import free_port, wait_for
from tests.support.proxy import CountingProxy
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.registry


def test_images_of_a_pod_are_those_its_admission_would_look_up():
    pod = {"spec": {
        "initContainers": [{"name": "i", "image": "init:1"}],
        "containers": [{"name": "a", "image": "app:1"},
                       {"name": "b", "image": "fixed:1", "securityContext": {"runAsUser": 1000}},
                       {"name": "c"}, {"name": "e", "image": ""}],
        "ephemeralContainers": [{"name": "d", "image": "debug:1"}],
    }}
    assert warmup.images_of(pod) == {"init:1", "app:1", "debug:1"}
    assert warmup.images_of({"spec": {**pod["spec"], "os": {"name": "windows"}}}) == set()  # never decided
    # what an admission could not read is not warmed: there is nothing it would look up
    assert warmup.images_of({"spec": {**pod["spec"], "containers": ["junk"]}}) == set()
    assert warmup.images_of({"spec": {**pod["spec"], "securityContext": {"runAsUser": "1000"}}}) == set()
    pod["spec"]["securityContext"] = {"runAsUser": 1000}
    assert warmup.images_of(pod) == set()
    assert warmup.images_of({"spec": None}) == set()


@pytest.fixture
async def proxy(registry) -> AsyncIterator[CountingProxy]:
    counting = await CountingProxy(registry.url).start()
    yield counting
    await counting.stop()


async def test_resolve_all_is_bounded_counts_progress_and_fills_the_cache(registry, pusher, proxy):
    refs = [pusher.image(f"warm/app{i}", "v1", user="app",
                         layers=[layer({"etc/passwd": passwd(("app", 1000 + i, 1000))})]).reference
            for i in range(6)]
    images = [f"{proxy.host}/{ref.split('/', 1)[1]}" for ref in refs]
    broken = f"127.0.0.1:{free_port()}/warm/gone:v1"
    pods = {PullContext("team-a"), PullContext("team-b", ("regcred",), "builder")}
    config = from_mapping({"registries": {proxy.host: {"plain_http": True}}})
    gauges = {state: metrics.WARMUP_IMAGES.labels(state) for state in ("total", "done", "failed")}
    before = {state: gauge._value.get() for state, gauge in gauges.items()}
    async with aiohttp.ClientSession() as session:
        resolver = Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)
        peak = 0
        asked: list[tuple[str, PullContext | None]] = []
        original = resolver.start

        def watching(image: str, **options):
            nonlocal peak
            asked.append((image, options.get("pull")))
            task = original(image, **options)
            peak = max(peak, len(resolver._background))
            return task

        resolver.start = watching  # type: ignore[method-assign]
        await warmup.resolve_all(resolver, {image: pods for image in [*images, broken]}, concurrency=2)
        assert [resolver.cached(image).uid for image in images] == [1000 + i for i in range(6)]
    assert 1 <= peak <= 2
    # a lookup is started with the first pull context; the second finds it cached (a public image)
    first, second = PullContext("team-a"), PullContext("team-b", ("regcred",), "builder")
    assert Counter(asked) == Counter([*((image, first) for image in images),
                                      (broken, first), (broken, second)])
    assert gauges["total"]._value.get() == 7
    assert gauges["done"]._value.get() - before["done"] == 6
    assert gauges["failed"]._value.get() - before["failed"] == 1
    assert proxy.count("/manifests/") == 6


def test_the_child_says_each_image_with_the_pull_contexts_of_its_pods():
    wanted = {"b:1": {PullContext("ns", ("regcred", "other"), "builder"), PullContext("ns")},
              "a:1": {PullContext("other-ns")}}
    out = warmup.encode(wanted)
    assert list(orjson.loads(out)) == ["a:1", "b:1"]
    assert warmup.decode(out) == wanted
    assert warmup.decode(b'{"c:1": [{"namespace": "ns"}, 7, {"namespace": "ns", "pull_secrets": [1], '
                         b'"service_account": "default"}], "d:1": "junk"}') == {}


def test_without_a_cluster_the_server_logs_one_line_and_is_ready(tmp_path, monkeypatch, registry_config):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    server = WebhookProcess(config=registry_config).start()
    try:
        context = ssl.create_default_context(cafile=server.cert)
        with urllib.request.urlopen(f"{server.url}/readyz", context=context, timeout=10) as reply:
            assert reply.status == 200
        wait_for(lambda: "warm-up" in server.log.read_text(), timeout=10, what="the warm-up's log line")
    finally:
        server.stop()
    lines = [line for line in server.log.read_text().splitlines() if "warm-up" in line]
    assert len(lines) == 1 and "warm-up skipped" in lines[0], lines


def test_warmup_settings_are_checked():
    assert (Config().warmup, Config().warmup_concurrency) == (True, 4)
    assert from_mapping({"warmup": False, "warmup_concurrency": 8}).warmup_concurrency == 8
    with pytest.raises(ConfigError, match="warmup must be true or false"):
        from_mapping({"warmup": "yes"})
    with pytest.raises(ConfigError, match="warmup_concurrency must be at least 1"):
        from_mapping({"warmup_concurrency": 0})


def test_the_warm_up_never_reads_the_developers_kube_config(tmp_path, monkeypatch, registry_config):
    """As for the pull secrets: only an explicit kubeconfig, ``$KUBECONFIG`` or the service account."""
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: laptop\n"
        "clusters: [{name: laptop, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: laptop, context: {cluster: laptop, user: me}}]\n"
        "users: [{name: me, user: {token: not-a-real-one}}]\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    server = WebhookProcess(config=registry_config).start()
    try:
        wait_for(lambda: "warm-up" in server.log.read_text(), timeout=10, what="the warm-up's log line")
    finally:
        server.stop()
    lines = [line for line in server.log.read_text().splitlines() if "warm-up" in line]
    assert len(lines) == 1 and "warm-up skipped" in lines[0], lines
