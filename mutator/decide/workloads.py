"""Where the pod template sits in every kind that makes Pods. Pure.

The Pod webhook decides on Pods; developers write Deployments, Jobs and
CronJobs. Telling them at ``kubectl apply`` time (and offline, in ``mutator
review``) means finding the pod spec inside each kind, with the JSON pointer
where it sits, so the same policy and the same patch apply to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mutator.decide import admission
from mutator.decide.admission import Target
from mutator.errors import BadReview

# kind → path from the object to its pod spec
SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
}

# What the /warn/workloads route accepts: the API server sends nothing else to it.
RESOURCES: frozenset[tuple[str, str]] = frozenset({
    ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
    ("apps", "replicasets"), ("batch", "jobs"), ("batch", "cronjobs"),
})
_RESOURCE_KINDS = {
    "deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet",
    "replicasets": "ReplicaSet", "jobs": "Job", "cronjobs": "CronJob",
}


@dataclass(frozen=True, slots=True)
class Workload:
    """One object that makes Pods, with the containers of its pod template.

    ``target`` is ``None`` for a Windows pod template (not ours to judge).
    Container pointers are relative to the object itself, so a patch made from
    them applies to the manifest as written.
    """

    kind: str
    name: str
    namespace: str
    spec_pointer: str
    target: Target | None

    @property
    def label(self) -> str:
        """``deployment/web``: how kubectl names it, and how warnings begin."""
        return f"{self.kind.lower()}/{self.name or '?'}"


def pod_spec(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The pod spec inside a manifest of *kind*, or ``None`` where the object lacks one."""
    node: Any = obj
    for key in SPEC_PATHS.get(kind, ()):
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None


def supported(kind: object) -> bool:
    return isinstance(kind, str) and kind in SPEC_PATHS


def of(obj: Mapping[str, Any]) -> Workload:
    """The workload in a manifest of a supported kind; raises :class:`BadReview` when malformed."""
    kind = obj.get("kind")
    if not supported(kind):
        raise BadReview(f"kind {kind!r} does not make Pods")
    assert isinstance(kind, str)
    node: Any = obj
    walked = ""
    for key in SPEC_PATHS[kind]:
        node = node.get(key) if isinstance(node, Mapping) else None
        walked += f"/{key}"
        if not isinstance(node, Mapping):
            raise BadReview(f"{kind} has no {walked.lstrip('/').replace('/', '.')} object")
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    name = admission.shown_name(metadata.get("name"), metadata.get("generateName"))
    namespace = metadata.get("namespace")
    return Workload(
        kind=kind,
        name=str(name),
        namespace=namespace if isinstance(namespace, str) else "",
        spec_pointer=walked,
        target=admission.pod_target(node, walked),
    )


def from_review(review: admission.Review) -> Workload | None:
    """The workload a CREATE or UPDATE asks about; ``None`` when there is nothing to say."""
    if review.operation not in ("CREATE", "UPDATE") or review.sub_resource:
        return None
    if review.object is None:
        raise BadReview("request.object is missing")
    expected = _RESOURCE_KINDS.get(review.resource)
    if review.kind != expected:
        raise BadReview(f"resource {review.resource!r} must carry a {expected}, got {review.kind!r}")
    workload = of({**review.object, "kind": review.kind})
    if not workload.name and review.name:
        return Workload(workload.kind, review.name, workload.namespace, workload.spec_pointer,
                        workload.target)
    return workload
