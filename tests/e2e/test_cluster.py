"""Smoke tests of the e2e fixture itself: if these fail, the webhook's e2e failures mean nothing."""

from __future__ import annotations

import itertools
import json
import secrets
import ssl
import time
import urllib.parse
from typing import Any

import pytest

from .cluster import KubeCluster, KubectlError, http_get, wait_for

DEMO_IMAGE = "127.0.0.1:5000/demo:1"  # never pulled: there is no kubelet


def _unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _pods(kube: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    return kube.api_get(f"/api/v1/namespaces/{namespace}/pods")["items"]


def test_wait_for_returns_first_truthy_value_and_names_what_on_timeout() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 2 and "done", timeout=5, what="counter", interval=0.01) == "done"

    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"waiting for the impossible; last result: \[\]"):
        wait_for(list, timeout=0.3, what="the impossible", interval=0.05)
    assert time.monotonic() - began < 2

    def refused() -> bool:
        raise ConnectionRefusedError("not yet")

    with pytest.raises(TimeoutError, match="not yet"):
        wait_for(refused, timeout=0.2, what="a server", interval=0.05, retry_on=(OSError,))
    with pytest.raises(ConnectionRefusedError):  # not in retry_on: a bug, not slowness
        wait_for(refused, timeout=5, what="a server")


def test_control_plane_is_on_loopback_with_rbac(kube: KubeCluster) -> None:
    assert kube.server.startswith("https://127.0.0.1:")
    assert kube.workdir is not None and kube.kubeconfig is not None and kube.kubeconfig.is_file()
    assert kube.startup_seconds is not None and kube.startup_seconds > 0

    # ca_file verifies the serving certificate for a plain Python client (hostname 127.0.0.1 included).
    assert kube.ca_file is not None
    verified = ssl.create_default_context(cafile=str(kube.ca_file))
    status, body = http_get(kube.server + "/readyz", context=verified, token=kube.token)
    assert (status, body) == (200, b"ok")
    # Anonymous requests are authenticated as system:anonymous and refused by RBAC.
    status, _ = http_get(kube.server + "/api/v1/namespaces", context=verified)
    assert status == 403
    # The admin token is in system:masters.
    assert kube.kubectl("auth", "can-i", "*", "*", "--all-namespaces").stdout.strip() == "yes"

    version = kube.api_get("/version")
    assert version["gitVersion"].startswith("v1.20.")

    with pytest.raises(KubectlError, match="NotFound"):
        kube.kubectl("get", "namespace", _unique("absent"))
    assert kube.kubectl("get", "namespace", _unique("absent"), check=False).returncode != 0


def test_pod_is_admitted_right_after_create_namespace(kube: KubeCluster) -> None:
    """create_namespace must not return before ServiceAccount admission would accept a Pod."""
    namespace = _unique("bare")
    kube.create_namespace(namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "app", "image": DEMO_IMAGE}]},
    }
    created = json.loads(
        kube.kubectl("-n", namespace, "create", "-f", "-", "-o", "json", input=json.dumps(pod)).stdout
    )
    assert created["spec"]["serviceAccountName"] == "default"
    kube.kubectl("delete", "namespace", namespace, "--wait=false")


def test_deployment_becomes_pods_and_deletion_cascades(kube: KubeCluster) -> None:
    namespace = _unique("smoke")
    labels = {"e2e.nonroot-mutator/smoke": "true", "team": "platform"}
    kube.create_namespace(namespace, labels)

    stored = kube.get_json("get", "namespace", namespace)
    assert {k: stored["metadata"]["labels"].get(k) for k in labels} == labels
    account = kube.get_json("-n", namespace, "get", "serviceaccount", "default")
    assert account["secrets"], "token controller has not run"

    kube.kubectl("-n", namespace, "create", "deployment", "demo", f"--image={DEMO_IMAGE}", "--replicas=2")
    pods = wait_for(
        lambda: (found := _pods(kube, namespace)) and len(found) == 2 and found,
        timeout=60,
        what=f"2 Pods of deployment demo in {namespace}",
    )

    replicasets = kube.get_json("-n", namespace, "get", "replicasets")["items"]
    assert len(replicasets) == 1
    (rs,) = replicasets
    assert [(o["kind"], o["name"]) for o in rs["metadata"]["ownerReferences"]] == [("Deployment", "demo")]
    for pod in pods:
        assert [(o["kind"], o["name"]) for o in pod["metadata"]["ownerReferences"]] == [
            ("ReplicaSet", rs["metadata"]["name"])
        ]
        assert [c["image"] for c in pod["spec"]["containers"]] == [DEMO_IMAGE]
        # ServiceAccount admission ran: the token Secret is mounted.
        assert pod["spec"]["serviceAccountName"] == "default"
        assert any(
            v.get("secret", {}).get("secretName", "").startswith("default-token-")
            for v in pod["spec"]["volumes"]
        )
        # Stored, never scheduled or run.
        assert "nodeName" not in pod["spec"]
        assert pod["status"].get("phase") == "Pending"

    # Background cascading deletion: the garbage collector removes the ReplicaSet, then the Pods.
    kube.kubectl("-n", namespace, "delete", "deployment", "demo")
    wait_for(
        lambda: (
            not _pods(kube, namespace)
            and not kube.api_get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"]
        ),
        timeout=60,
        what=f"the garbage collector to delete the ReplicaSet and Pods in {namespace}",
    )

    # The namespace controller empties and finalises the namespace.
    kube.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_for(
        lambda: kube.api_get(f"/api/v1/namespaces/{urllib.parse.quote(namespace)}") is None,
        timeout=60,
        what=f"namespace {namespace} to be deleted",
    )
