"""Pods for the node: bound to it, host-networked, and a way to wait for what the kubelet made of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.e2e.cluster import KubectlError
from tests.support.net import wait_for

from .node import POD_LOGS, Node

# busybox stays up so the kernel can be asked about its process; it prints `id` first, for the log.
COMMAND = ["/bin/busybox", "sh", "-c", "id; exec /bin/busybox sleep 3600"]
START_TIMEOUT = 90.0


def container(name: str, image: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "command": COMMAND, **fields}


def pod_spec(*containers: dict[str, Any], node: Node, **spec: Any) -> dict[str, Any]:
    """A spec for *node*: no scheduler, host network (see containerd.py), no token volume, quick to stop."""
    return {"nodeName": node.name, "hostNetwork": True, "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1, "containers": list(containers), **spec}


def pod(name: str, image: str, *, node: Node, non_root: bool = False) -> dict[str, Any]:
    spec = pod_spec(container("app", image), node=node,
                    **({"securityContext": {"runAsNonRoot": True}} if non_root else {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def create(node: Node, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """kubectl create; returns the object the API server stored (after every admission webhook)."""
    result = node.kube.kubectl("-n", namespace, "create", "-f", "-", "-o", "json", input=json.dumps(manifest))
    return json.loads(result.stdout)


def refused(node: Node, namespace: str, manifest: dict[str, Any]) -> str:
    """kubectl create that must fail; returns kubectl's stderr (the API server's refusal)."""
    try:
        create(node, namespace, manifest)
    except KubectlError as exc:
        return str(exc.stderr)
    raise AssertionError(f"{manifest['metadata']['name']} was admitted into {namespace}")


@dataclass(frozen=True)
class Outcome:
    """What the node made of one container: running (with the kernel's ids) or waiting (with why)."""

    pod: dict[str, Any]
    reason: str = ""
    message: str = ""
    ids: dict[str, list[int]] | None = None

    @property
    def uid(self) -> int:
        assert self.ids is not None, f"not running: {self.reason}: {self.message}"
        return self.ids["Uid"][0]

    @property
    def gid(self) -> int:
        assert self.ids is not None, f"not running: {self.reason}: {self.message}"
        return self.ids["Gid"][0]


FAILED = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError", "ErrImagePull",
          "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff")


def outcome(node: Node, namespace: str, name: str, *, timeout: float = START_TIMEOUT) -> Outcome:
    """Wait until the kubelet has either started the Pod's first container or given up on it."""

    def settled() -> Outcome | None:
        stored = node.kube.api_get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        statuses = (stored or {}).get("status", {}).get("containerStatuses") or []
        if not statuses:
            return None
        state = statuses[0].get("state", {})
        if "running" in state:
            return Outcome(stored, ids=node.process_ids(statuses[0]["containerID"]))
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in FAILED:
            return Outcome(stored, waiting["reason"], waiting.get("message", ""))
        if "terminated" in state:
            terminated = state["terminated"]
            return Outcome(stored, terminated.get("reason", "Terminated"), terminated.get("message", ""))
        return None

    try:
        return wait_for(settled, timeout=timeout, what=f"pod {namespace}/{name} to run or fail",
                        retry_on=(FileNotFoundError,))
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\nlast kubelet lines:\n{node.kubelet_tail()}") from None


def security_context(stored: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return stored["spec"]["containers"][index].get("securityContext") or {}


def container_log(node: Node, namespace: str, name: str, container_name: str = "app") -> str:
    """What the container printed, from the file the kubelet writes (there is no kubelet API client here)."""
    stored = node.kube.api_get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    directory = POD_LOGS / f"{namespace}_{name}_{stored['metadata']['uid']}" / container_name
    return wait_for(lambda: "".join(p.read_text() for p in sorted(directory.glob("*.log"))),
                    timeout=30, what=f"the log of {namespace}/{name}", retry_on=(OSError,))
