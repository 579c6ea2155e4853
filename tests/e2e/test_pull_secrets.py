"""Pull secrets end to end: real Secrets and ServiceAccounts in the real API server, an htpasswd registry
with TLS, and the webhook reading the cluster with exactly the RBAC the README asks for.

Namespaces: ``own`` has a ``kubernetes.io/dockerconfigjson`` Secret the Pods name; ``account`` has a
``kubernetes.io/dockercfg`` Secret on its ServiceAccount ``builder``; ``none`` has nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mutator.resolve.kube import pullsecrets
from mutator.resolve.kube.informer import State
from mutator.resolve.registry.authn.credentials import PullContext

from .cluster import KubeCluster, wait_for
from .conftest import ALICE, Private, Registered, pod_manifest, serving
from .webhook_config import LABEL

ACCESS = "nonroot_mutator_cache_lookups_total{cache=\"access\""
LOOKUPS = "nonroot_mutator_registry_lookups_total"
# What the README asks an operator to grant the webhook's ServiceAccount.
PULL_SECRET_RULES = [{"apiGroups": [""], "resources": ["secrets", "serviceaccounts"],
                      "verbs": ["get", "list", "watch"]}]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def docker_config(host: str, user: str, password: str, *, legacy: bool = False) -> dict[str, Any]:
    entry = {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}
    return entry if legacy else {"auths": entry}


def secret_manifest(name: str, kind: str, document: Any) -> dict[str, Any]:
    key = ".dockerconfigjson" if kind == "kubernetes.io/dockerconfigjson" else ".dockercfg"
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": kind,
            "data": {key: base64.b64encode(json.dumps(document).encode()).decode()}}


def apply(kube: KubeCluster, namespace: str, *objects: dict[str, Any]) -> None:
    kube.kubectl("-n", namespace, "apply", "-f", "-",
                 input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def service_account_kubeconfig(kube: KubeCluster, directory: Path, *, verbs: list[str],
                               extra_rules: list[dict[str, Any]] | None = None) -> Path:
    """A kubeconfig for a new ServiceAccount granted *verbs* on Secrets and ServiceAccounts (and
    *extra_rules*), cluster-wide."""
    namespace, name = unique("e2e-mutator"), "nonroot-mutator"
    kube.create_namespace(namespace)
    rules = [{**rule, "verbs": verbs} for rule in PULL_SECRET_RULES] + list(extra_rules or ())
    role = f"{namespace}-pull-secrets"
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": role},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]}))

    def token() -> str | None:
        account = kube.api_get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
        names = [s["name"] for s in (account or {}).get("secrets") or []]
        if not names:
            return None
        secret = kube.api_get(f"/api/v1/namespaces/{namespace}/secrets/{names[0]}")
        data = (secret or {}).get("data") or {}
        return base64.b64decode(data["token"]).decode() if "token" in data else None

    value = wait_for(token, timeout=30, what=f"the token of ServiceAccount {namespace}/{name}")
    path = directory / f"{namespace}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": kube.server,
                                                 "certificate-authority": str(kube.ca_file)}}],
        "users": [{"name": name, "user": {"token": value}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": name}}],
        "current-context": "e2e",
    }))
    return path


@pytest.fixture(scope="module")
def namespaces(kube: KubeCluster, private: Private) -> Iterator[dict[str, str]]:
    names = {role: unique(f"e2e-pull-{role}") for role in ("own", "account", "none")}
    for name in names.values():
        kube.create_namespace(name, {LABEL: "enforce"})
    apply(kube, names["own"], secret_manifest("regcred", "kubernetes.io/dockerconfigjson",
                                              docker_config(private.host, *ALICE)))
    apply(kube, names["account"],
          secret_manifest("legacy", "kubernetes.io/dockercfg",
                          docker_config(private.host, *ALICE, legacy=True)),
          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
           "imagePullSecrets": [{"name": "legacy"}]})
    yield names
    kube.kubectl("delete", "namespace", *names.values(), "--wait=false")


@pytest.fixture(scope="module")
def webhook(kube: KubeCluster, private: Private, registry, namespaces,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    directory = tmp_path_factory.mktemp("pull-webhook")
    kubeconfig = service_account_kubeconfig(kube, directory, verbs=["get", "list", "watch"])
    config = directory / "mutator.yaml"
    config.write_text(json.dumps({
        "registries": {private.host: {"ca_file": private.ca_file}, registry.host: {"plain_http": True}},
        "kubeconfig": str(kubeconfig),
    }))
    with serving(kube, str(config), name="nonroot-mutator-pull-secrets") as registered:
        yield registered


def create(kube: KubeCluster, namespace: str, manifest: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    result = kube.kubectl("-n", namespace, "create", "-f", "-", "-o", "json", input=json.dumps(manifest),
                          check=False)
    return (json.loads(result.stdout) if result.returncode == 0 else None), result.stderr


def run_as(pod: dict[str, Any] | None) -> list[Any]:
    assert pod is not None
    return [(c.get("securityContext") or {}).get("runAsUser") for c in pod["spec"]["containers"]]


def test_private_image_resolves_with_the_pods_own_pull_secret(webhook, namespaces, private):
    pod, stderr = create(webhook.kube, namespaces["own"], pod_manifest(
        "own", ("app", private.images["shared"]), imagePullSecrets=[{"name": "regcred"}]))
    assert run_as(pod) == [1401], stderr


def test_private_image_resolves_with_its_service_accounts_pull_secret(webhook, namespaces, private):
    pod, stderr = create(webhook.kube, namespaces["account"], pod_manifest(
        "account", ("app", private.images["account"]), serviceAccountName="builder"))
    assert run_as(pod) == [1402], stderr
    # the ServiceAccount admission plugin copied them in, as the node will see them
    assert pod["spec"]["imagePullSecrets"] == [{"name": "legacy"}]


def test_without_credentials_enforce_refuses_naming_the_missing_credential(webhook, namespaces, private):
    image = private.images["never"]
    pod, stderr = create(webhook.kube, namespaces["none"], pod_manifest("bare", ("app", image)))
    assert pod is None
    assert 'admission webhook "enforce.nonroot-mutator.dev" denied the request' in stderr
    assert f"{private.host} requires authentication (HTTP 401) and no credentials match this image" in stderr
    assert ALICE[1] not in stderr


def test_another_namespace_is_not_answered_from_the_cache(webhook, namespaces, private):
    kube, image = webhook.kube, private.images["shared"]
    first, stderr = create(kube, namespaces["own"], pod_manifest(
        unique("first"), ("app", image), imagePullSecrets=[{"name": "regcred"}]))
    assert run_as(first) == [1401], stderr
    lookups, checks = webhook.metric(LOOKUPS), webhook.metric(ACCESS)

    pod, stderr = create(kube, namespaces["none"], pod_manifest("intruder", ("app", image)))
    assert pod is None and "requires authentication" in stderr
    # refused by the access check on the cached answer, not by a lookup of its own
    assert webhook.metric(LOOKUPS) == lookups
    assert webhook.metric(f'{ACCESS},result="miss"}}') >= 1 and webhook.metric(ACCESS) == checks + 1


def test_a_public_image_costs_no_access_check(webhook, namespaces, images):
    kube, image = webhook.kube, images["named-base"]
    first, stderr = create(kube, namespaces["own"], pod_manifest(unique("public"), ("app", image)))
    assert run_as(first) == [1000], stderr
    checks, lookups = webhook.metric(ACCESS), webhook.metric(LOOKUPS)
    for role in ("none", "account"):
        pod, stderr = create(kube, namespaces[role], pod_manifest(unique("public"), ("app", image)))
        assert run_as(pod) == [1000], stderr
    assert webhook.metric(ACCESS) == checks and webhook.metric(LOOKUPS) == lookups


async def test_informer_reads_real_secrets_and_service_accounts(kube, namespaces, private, tmp_path, caplog):
    """The informer itself, against the API server: both types, a ServiceAccount's list, a garbage
    Secret skipped with a log line, changes followed by the watch; then a ServiceAccount that may only
    GET degrades to one GET per miss."""
    caplog.set_level(logging.INFO, logger="mutator")
    own, account = namespaces["own"], namespaces["account"]
    kubeconfig = service_account_kubeconfig(kube, tmp_path, verbs=["get", "list", "watch"])
    source = await pullsecrets.from_config(enabled=True, kubeconfig=str(kubeconfig))
    assert source is not None
    try:
        await asyncio.wait_for(asyncio.gather(*(i.listed.wait() for i in source.informers)), 30)
        assert all(i.state is State.WATCHING for i in source.informers)
        image = f"{private.host}/private/shared"
        [mine] = (await source.keyring(PullContext(own, ("regcred",)))).lookup(image)
        assert (mine.username, mine.source) == ("alice", f"secret {own}/regcred")
        [legacy] = (await source.keyring(PullContext(account, (), "builder"))).lookup(image)
        assert legacy.source == f"secret {account}/legacy"
        assert await source.keyring(PullContext(own, ("missing",))) is None
        assert await source.keyring(PullContext(namespaces["none"])) is None  # default SA, no secrets

        # A Secret made now arrives through the watch; garbage is logged and skipped; Opaque never arrives.
        config_json = "kubernetes.io/dockerconfigjson"
        apply(kube, own,
              secret_manifest("later", config_json, docker_config("later.example", *ALICE)),
              secret_manifest("garbage", config_json, {"auths": "not an object"}),
              {**secret_manifest("opaque", config_json, {"auths": {}}), "type": "Opaque"})
        watched = source.informers[0]
        await _until(lambda: None not in (watched.get(own, "later"), watched.get(own, "garbage")),
                     "the new Secrets, through the watch")
        assert len(watched.get(own, "garbage")) == 0
        assert f"ignoring secret {own}/garbage" in caplog.text
        assert all(i.get(own, "opaque") is None for i in source.informers)
        kube.kubectl("-n", own, "delete", "secret", "later")
        await _until(lambda: watched.get(own, "later") is None, "the deletion, through the watch")
    finally:
        await source.close()

    getter = await pullsecrets.from_config(
        enabled=True, kubeconfig=str(service_account_kubeconfig(kube, tmp_path, verbs=["get"])))
    assert getter is not None
    try:
        await asyncio.wait_for(asyncio.gather(*(i.listed.wait() for i in getter.informers)), 30)
        assert all(i.state is State.FORBIDDEN for i in getter.informers) and getter.ready
        [found] = (await getter.keyring(PullContext(account, (), "builder"))).lookup(image)
        assert found.source == f"secret {account}/legacy"
        assert caplog.text.count("not allowed to list/watch secrets") == 2  # once per Secret type
    finally:
        await getter.close()


# Run in a fresh interpreter: this one has imported kubernetes-asyncio's generated client elsewhere.
WATCH_AND_LIST_MODULES = """
import asyncio, json, sys
from mutator.resolve.kube import pullsecrets

async def main():
    source = await pullsecrets.from_config(enabled=True, kubeconfig=sys.argv[1])
    try:
        settled = await source.settle()
        return {"watching": settled and all(i.complete for i in source.informers),
                "secrets": sum(len(i) for i in source.informers[:2]),
                "loaded": sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio"))}
    finally:
        await source.close()

print(json.dumps(asyncio.run(main())))
"""


def test_informers_watch_the_cluster_without_loading_the_generated_client(kube, namespaces, tmp_path):
    """The generated client (every API type, ~40 MB of RSS) stays out of a process that reads pull
    secrets: kubernetes-asyncio loads the kubeconfig in a child, the informers speak REST."""
    kubeconfig = service_account_kubeconfig(kube, tmp_path, verbs=["get", "list", "watch"])
    result = subprocess.run([sys.executable, "-c", WATCH_AND_LIST_MODULES, str(kubeconfig)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["watching"] and found["secrets"] >= 2, found  # regcred and legacy, at least
    assert found["loaded"] == [], found


async def _until(predicate: Callable[[], bool], what: str) -> None:
    """wait_for in a thread, so that the informer goes on running on this loop meanwhile."""
    await asyncio.to_thread(wait_for, predicate, timeout=30, what=what, interval=0.05)


def _workload_warnings(webhook: Registered, namespace: str, image: str, **pod_spec: Any) -> list[str]:
    """POST a Deployment CREATE to the workload-warning route, as the API server would."""
    name = unique("web")
    template = {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}], **pod_spec}}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": secrets.token_hex(8), "operation": "CREATE", "namespace": namespace, "name": name,
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                   "spec": {"selector": {"matchLabels": {"app": name}}, "template": template}}}}
    reply = webhook.webhook.https().request(
        "POST", f"{webhook.webhook.url}/warn/workloads/enforce?timeout=10s", body=json.dumps(review),
        headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply.data
    response = json.loads(reply.data)["response"]
    assert response["allowed"] is True and "patch" not in response
    return response.get("warnings") or []


def test_workload_warnings_use_the_templates_pull_secrets(webhook, namespaces, private):
    # A Deployment is told what its Pods will meet: the template's own imagePullSecrets open the
    # private image (cached by then), and the same template without them is told it would be refused.
    kube, image = webhook.kube, private.images["shared"]
    pod, stderr = create(kube, namespaces["own"], pod_manifest(
        unique("warm"), ("app", image), imagePullSecrets=[{"name": "regcred"}]))
    assert run_as(pod) == [1401], stderr

    granted = _workload_warnings(webhook, namespaces["own"], image, imagePullSecrets=[{"name": "regcred"}])
    assert any('container "app" will run as uid 1401' in w for w in granted), granted
    refused = _workload_warnings(webhook, namespaces["none"], image)
    assert refused and all("uid 1401" not in w for w in refused), refused
    assert any("would be refused" in w for w in refused), refused
