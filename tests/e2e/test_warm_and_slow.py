"""Warm-up from stored Pods, and a Deployment that converges although its first admissions meet a cold cache.

Both depend on lookups that run on without an admission waiting: the warm-up's,
and the one a timed-out admission started, which the controller's retry finds finished.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.images import Pusher, layer, passwd
from tests.support.proxy import CountingProxy, proxy_thread
from tests.support.registry import RegistryServer
from tests.support.webhook import WebhookProcess

from .cluster import KubeCluster, wait_for
from .conftest import ALICE, Private, pod_manifest, register
from .test_pull_secrets import ACCESS, LOOKUPS, apply, create, docker_config, run_as, secret_manifest
from .webhook_config import LABEL


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def slow_proxy(registry: RegistryServer) -> Iterator[CountingProxy]:
    """The loopback registry as a far-away one: every blob waits 2 s before it is served."""
    with proxy_thread(registry.url, blob_delay=2.0) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def proxied_config(slow_proxy: CountingProxy, registry: RegistryServer, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("warm") / "mutator.yaml"
    path.write_text(f'registries:\n  "{slow_proxy.host}": {{plain_http: true}}\n'
                    f'  "{registry.host}": {{plain_http: true}}\n')
    return str(path)


def via(proxy: CountingProxy, reference: str) -> str:
    return f"{proxy.host}/{reference.split('/', 1)[1]}"


def test_warm_up_resolves_the_images_of_pods_stored_before_the_start(
    kube: KubeCluster, pusher: Pusher, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch,
    tmp_path,
):
    """Counted at a proxy that only this test's images go through: other modules' labelled
    namespaces (still terminating) may hold Pods too, and the warm-up rightly reads them."""
    opted, other = unique("e2e-warm"), unique("e2e-cold")
    kube.create_namespace(opted, {LABEL: "enforce"})
    kube.create_namespace(other)
    with proxy_thread(registry.url) as proxy:
        config = tmp_path / "mutator.yaml"
        config.write_text(f'registries:\n  "{proxy.host}": {{plain_http: true}}\n'
                          f'  "{registry.host}": {{plain_http: true}}\n')
        wanted = [pusher.image(f"warm/e2e-{i}", "v1", user="app",
                               layers=[layer({"etc/passwd": passwd(("app", 1000 + i, 1000))})])
                  for i in range(2)]
        ignored = pusher.image("warm/e2e-other", "v1", user="app",
                               layers=[layer({"etc/passwd": passwd(("app", 1500, 1000))})])
        try:
            # stored while no webhook is registered: nothing admits them
            for i, pushed in enumerate(wanted):
                manifest = pod_manifest(f"p{i}", ("c", via(proxy, pushed.reference)))
                kube.kubectl("-n", opted, "create", "-f", "-", input=json.dumps(manifest))
            manifest = pod_manifest("q", ("c", via(proxy, ignored.reference)))
            kube.kubectl("-n", other, "create", "-f", "-", input=json.dumps(manifest))

            monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
            webhook = WebhookProcess(config=str(config)).start()
            try:
                wait_for(lambda: all(proxy.count(f"/manifests/{p.digest}") for p in wanted),
                         timeout=60, what="the warm-up to read the two stored Pods' images")
                wait_for(lambda: webhook.metric('nonroot_mutator_warmup_images{state="done"}') >= 2,
                         timeout=60, what="the warm-up to count them done")
                assert proxy.count(f"/manifests/{ignored.digest}") == 0  # its namespace did not opt in
                assert webhook.metric('nonroot_mutator_cache_entries{cache="image"}') >= 2
                assert webhook.metric("nonroot_mutator_admissions_total") == 0  # no admission did it
            finally:
                webhook.stop()
        finally:
            kube.kubectl("delete", "namespace", opted, other, "--wait=false")


def test_warm_up_reads_private_images_with_the_pull_credentials_of_the_pods_that_run_them(
    kube: KubeCluster, private: Private, tmp_path,
):
    """Stored Pods run two private images: one names its pull Secret, one gets its ServiceAccount's.
    The warm-up reads each with those credentials, so the Pods admitted next are answered from the
    cache: no lookup of their own, and no access check (the warm-up proved those credentials)."""
    own, account = unique("e2e-warm-own"), unique("e2e-warm-account")
    for name in (own, account):
        kube.create_namespace(name, {LABEL: "enforce"})
    shared, via_account = private.images["shared"], private.images["account"]
    apply(kube, own, secret_manifest("regcred", "kubernetes.io/dockerconfigjson",
                                     docker_config(private.host, *ALICE)))
    apply(kube, account, secret_manifest("legacy", "kubernetes.io/dockercfg",
                                         docker_config(private.host, *ALICE, legacy=True)),
          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
           "imagePullSecrets": [{"name": "legacy"}]})
    config = tmp_path / "mutator.yaml"
    # no node-wide credentials: only the Pods' own Secrets open the private registry
    config.write_text(json.dumps({"registries": {private.host: {"ca_file": private.ca_file}},
                                  "kubeconfig": str(kube.kubeconfig)}))
    try:
        # stored while no webhook is registered: nothing admits them
        apply(kube, own, pod_manifest("stored", ("app", shared), imagePullSecrets=[{"name": "regcred"}]))
        apply(kube, account, pod_manifest("stored", ("app", via_account), serviceAccountName="builder"))
        webhook = WebhookProcess(config=str(config)).start()
        configuration = None
        try:
            wait_for(lambda: "warm-up: done" in webhook.log.read_text(), timeout=90,
                     what="the warm-up to finish")
            lookups, checks = webhook.metric(LOOKUPS), webhook.metric(ACCESS)
            configuration = register(kube, webhook, name=unique("nonroot-mutator-warm-private"))
            first, stderr = create(kube, own, pod_manifest(unique("next"), ("app", shared),
                                                           imagePullSecrets=[{"name": "regcred"}]))
            assert run_as(first) == [1401], stderr
            second, stderr = create(kube, account, pod_manifest(unique("next"), ("app", via_account),
                                                                serviceAccountName="builder"))
            assert run_as(second) == [1402], stderr
            assert webhook.metric(LOOKUPS) == lookups  # both answered from what the warm-up read
            assert webhook.metric(ACCESS) == checks  # with the very credentials the warm-up offered
        finally:
            if configuration is not None:
                kube.kubectl("delete", "mutatingwebhookconfiguration", configuration["metadata"]["name"],
                             "--ignore-not-found")
            webhook.stop()
    finally:
        kube.kubectl("delete", "namespace", own, account, "--wait=false")


def test_a_deployment_converges_when_its_first_admissions_meet_a_cold_cache(
    kube: KubeCluster, pusher: Pusher, slow_proxy: CountingProxy, proxied_config: str,
):
    """The webhook has 2 s; the image takes over 4 s to read (two delayed blobs). The first admissions
    are refused as temporary; the lookup goes on; the ReplicaSet controller's retry finds it cached."""
    namespace = unique("e2e-slow")
    kube.create_namespace(namespace, {LABEL: "enforce"})
    pushed = pusher.image("warm/slow", "v1", user="app",
                          layers=[layer({"etc/passwd": passwd(("app", 1234, 1235))})])
    image = via(slow_proxy, pushed.reference)
    webhook = WebhookProcess(config=proxied_config).start()
    configuration = register(kube, webhook, name=unique("nonroot-mutator-slow"), timeout_seconds=2)
    try:
        slow_proxy.reset()
        kube.kubectl("-n", namespace, "create", "deployment", "slow", f"--image={image}", "--replicas=2")

        def pods() -> list[dict[str, Any]] | None:
            items = kube.api_get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dslow")["items"]
            return items if len(items) == 2 else None

        replicas = wait_for(pods, timeout=120, what="2 replicas of deployment slow")
        for pod in replicas:
            assert pod["spec"]["containers"][0]["securityContext"] == {
                "runAsUser": 1234, "runAsGroup": 1235, "runAsNonRoot": True}
        assert webhook.metric('nonroot_mutator_admissions_total{mode="enforce",result="refused"}') >= 1
        # one lookup, shared by every retry: each blob was fetched once
        assert slow_proxy.count("/blobs/") == 2 and slow_proxy.count("/manifests/") == 1
    finally:
        kube.kubectl("delete", "mutatingwebhookconfiguration", configuration["metadata"]["name"],
                     "--ignore-not-found")
        kube.kubectl("delete", "namespace", namespace, "--wait=false")
        webhook.stop()
