"""``mutator report`` against the real API server with a private image: each Pod's images are read with
that Pod's pull secrets (or its ServiceAccount's), found through the report's own client, and a Pod
that could not pull the image is never shown what another namespace's secret read.

The Pods and the Deployment are stored in namespaces without the mode label, so no webhook saw them:
what the report says comes from reading the cluster and the registry, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mutator.commands import report
from mutator.resolve.kube import pullsecrets
from mutator.resolve.registry.authn.credentials import PullContext
from tests.test_cli import mutator

from .cluster import KubeCluster
from .conftest import ALICE, Private, pod_manifest
from .test_pull_secrets import apply, docker_config, secret_manifest, service_account_kubeconfig, unique

# What a report under a ServiceAccount needs besides the pull secrets: list what it reports on.
REPORT_RULES = [
    {"apiGroups": [""], "resources": ["namespaces", "pods", "replicationcontrollers"], "verbs": ["list"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"],
     "verbs": ["list"]},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]},
]


@pytest.fixture(scope="module")
def stored(kube: KubeCluster, private: Private,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """Pods and a Deployment running the private image, stored as written: their namespaces carry no
    mode label, so no webhook saw them. ``own`` has the pull Secret (named by the Pod ``direct``, and
    by the ServiceAccount ``builder`` of the Deployment ``via-account``) and a Pod ``plain`` naming none;
    ``bare`` has no credentials at all. Yields the namespaces and a config naming no credentials."""
    image = private.images["shared"]
    # "bare" first: its lookup starts first, and one Pod's failure must not become another's answer
    names = {role: unique(f"e2e-report-{role}") for role in ("bare", "own")}
    for name in names.values():
        kube.create_namespace(name)
    template = {"metadata": {"labels": {"app": "via-account"}},
                "spec": {"serviceAccountName": "builder", "containers": [{"name": "app", "image": image}]}}
    apply(kube, names["own"],
          secret_manifest("regcred", "kubernetes.io/dockerconfigjson", docker_config(private.host, *ALICE)),
          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "builder"},
           "imagePullSecrets": [{"name": "regcred"}]},
          pod_manifest("direct", ("app", image), imagePullSecrets=[{"name": "regcred"}]),
          pod_manifest("plain", ("app", image)),
          {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "via-account"},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "via-account"}},
                    "template": template}})
    apply(kube, names["bare"], pod_manifest("bare", ("app", image)))
    config = tmp_path_factory.mktemp("report-config") / "mutator.yaml"
    # no docker_config, no credential provider plugins: the cluster's Secrets are the only credentials
    config.write_text(json.dumps({"registries": {private.host: {"ca_file": private.ca_file}}}))
    yield names, str(config)
    kube.kubectl("delete", "namespace", *names.values(), "--wait=false")


def _report(kubeconfig: Path, config: str, names: dict[str, str],
            *args: str) -> tuple[int, dict[str, Any], str]:
    namespaces = [arg for name in names.values() for arg in ("-n", name)]
    result = mutator("report", "--kubeconfig", str(kubeconfig), *namespaces, "-o", "json", *args,
                     config=config)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def test_report_reads_a_private_image_with_each_pods_own_pull_secrets(kube, stored):
    names, config = stored
    code, data, stderr = _report(kube.kubeconfig, config, names)
    rows = {(r["namespace"], r["workload"]): r for r in data["containers"]}
    direct = rows[(names["own"], "pod/direct")]
    assert (direct["verdict"], direct["user"]) == ("named-user", "app"), direct
    assert "USER app is uid 1401" in direct["detail"] and direct["digest"].startswith("sha256:")
    # the same image in one run, for Pods that could not pull it: nothing of the answer shows
    for row in (rows[(names["own"], "pod/plain")], rows[(names["bare"], "pod/bare")]):
        assert (row["verdict"], row["user"], row["digest"]) == ("unresolvable", None, ""), row
        assert "requires authentication (HTTP 401) and no credentials match this image" in row["detail"]
    assert data["summary"][names["bare"]]["unresolvable"] == 1
    assert code == 0, stderr  # unresolvable is reported, not failed on: only root fails the report
    assert ALICE[1] not in json.dumps(data) + stderr


def test_report_reads_a_workloads_service_account_secrets_one_get_at_a_time(kube, stored, tmp_path):
    # A ServiceAccount that may only GET Secrets and ServiceAccounts: no informer, one GET per name.
    names, config = stored
    kubeconfig = service_account_kubeconfig(kube, tmp_path, verbs=["get"], extra_rules=REPORT_RULES)
    code, data, stderr = _report(kubeconfig, config, names, "--by", "workload")
    rows = {(r["namespace"], r["workload"]): r for r in data["containers"]}
    account = rows[(names["own"], "deployment/via-account")]
    assert (account["verdict"], account["user"]) == ("named-user", "app"), account
    assert "USER app is uid 1401" in account["detail"]
    assert rows[(names["own"], "pod/direct")]["user"] == "app"
    assert rows[(names["bare"], "pod/bare")]["verdict"] == "unresolvable"
    assert "not allowed to list/watch secrets" in stderr and code == 0


def test_report_with_pull_secrets_off_reads_with_node_wide_credentials_only(kube, stored, tmp_path):
    names, config = stored
    off = tmp_path / "mutator.yaml"
    off.write_text(json.dumps({**json.loads(Path(config).read_text()), "pull_secrets": False}))
    code, data, stderr = _report(kube.kubeconfig, str(off), names)
    assert {r["verdict"] for r in data["containers"]} == {"unresolvable"}, data["containers"]
    assert "pull_secrets: false" in stderr and "informer" not in stderr and code == 0


async def test_pull_secrets_on_a_callers_client_leave_it_open(kube, stored, private):
    """``mutator report`` hands over the client its ``--context`` chose: the informers run on it and
    stop on exit, and the client is still the caller's to use and close."""
    names, _ = stored
    api, _ = await report.connect(kubeconfig=str(kube.kubeconfig), context="e2e", in_cluster=False)
    async with api:
        async with pullsecrets.on_client(api, enabled=True) as source:
            assert source is not None and await source.settle()
            keyring = await source.keyring(PullContext(names["own"], (), "builder"))
            [found] = keyring.lookup(f"{private.host}/private/shared")
            assert found.source == f"secret {names['own']}/regcred"
        assert all(task.done() for task in source._tasks)  # the informers stopped with the block
        assert await report.list_objects(api, f"/api/v1/namespaces/{names['own']}/pods") is not None
