"""A rollout on the node: 3 replicas of a named-user image in ``enforce``, all as the resolved uid."""

from __future__ import annotations

from typing import Any

from tests.support.net import wait_for

from . import pods
from .node import Node

REPLICAS = 3


def test_a_deployment_of_three_replicas_runs_with_the_resolved_uid(node: Node, namespaces, seed_images):
    namespace = namespaces["enforce"]
    labels = {"app": "web"}
    template = {"metadata": {"labels": labels},
                "spec": pods.pod_spec(pods.container("app", seed_images["named"]), node=node,
                                      securityContext={"runAsNonRoot": True})}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels}, "template": template}}
    pods.create(node, namespace, deployment)

    def running() -> list[dict[str, Any]] | None:
        listed = node.kube.api_get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dweb")["items"]
        up = [p for p in listed if p["status"].get("phase") == "Running"]
        return up if len(up) == REPLICAS else None

    replicas = wait_for(running, timeout=pods.START_TIMEOUT, what=f"{REPLICAS} replicas Running")
    for replica in replicas:
        assert [owner["kind"] for owner in replica["metadata"]["ownerReferences"]] == ["ReplicaSet"]
        assert pods.security_context(replica) == {"runAsUser": 1201, "runAsGroup": 1202, "runAsNonRoot": True}
        result = pods.outcome(node, namespace, replica["metadata"]["name"])
        assert (result.uid, result.gid) == (1201, 1202)
    # The Deployment controller sees the rollout complete: every replica available.
    wait_for(lambda: node.kube.api_get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")["status"]
             .get("availableReplicas") == REPLICAS, timeout=pods.START_TIMEOUT, what="3 available replicas")
