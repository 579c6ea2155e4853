"""The MutatingWebhookConfiguration the chart is to render, built here until the chart exists.

One webhook entry per mode, each selecting namespaces by the
``nonroot-mutator/mode`` label and calling its own URL path, so the server
never has to read Namespace objects. Only what the webhook acts on is
registered (pod CREATE, ``pods/ephemeralcontainers`` UPDATE): every other pod
update would cost latency and widen the blast radius of an outage for nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

LABEL = "nonroot-mutator/mode"
MODES = ("enforce", "warn", "audit")
# enforce fails closed (a root image must not slip in while we are down);
# warn and audit only ever inform, so they must never block.
FAILURE_POLICY = {"enforce": "Fail", "warn": "Ignore", "audit": "Ignore"}
NEVER = ("kube-system",)


def namespace_selector(mode: str) -> dict[str, Any]:
    """The namespaces labelled *mode*, never those in NEVER."""
    return {"matchExpressions": [
        {"key": LABEL, "operator": "In", "values": [mode]},
        # set automatically from Kubernetes 1.21 on; absent (so matching) before
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": list(NEVER)},
    ]}


def mutating_webhook_configuration(
    *,
    base_url: str,
    ca_pem: bytes,
    name: str = "nonroot-mutator",
    timeout_seconds: int = 10,
    failure_policy: Mapping[str, str] = FAILURE_POLICY,
) -> dict[str, Any]:
    ca_bundle = base64.b64encode(ca_pem).decode()
    webhooks = []
    for mode in MODES:
        webhooks.append({
            "name": f"{mode}.nonroot-mutator.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": timeout_seconds,
            "failurePolicy": failure_policy[mode],
            "reinvocationPolicy": "IfNeeded",
            "matchPolicy": "Equivalent",
            "clientConfig": {"url": f"{base_url}/mutate/{mode}", "caBundle": ca_bundle},
            "namespaceSelector": namespace_selector(mode),
            "rules": [
                {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                 "resources": ["pods"], "scope": "Namespaced"},
                {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                 "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
            ],
        })
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": webhooks,
    }


# Apply-time warnings on workloads: a *validating* webhook (it never patches, and so sees the object as it
# will be stored, after every mutation), failing open with a short timeout: an apply is never blocked.
WORKLOAD_RULES = (
    {"apiGroups": ["apps"], "apiVersions": ["v1"],
     "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"]},
    # CronJobs are batch/v1beta1 before Kubernetes 1.21
    {"apiGroups": ["batch"], "apiVersions": ["v1", "v1beta1"], "resources": ["jobs", "cronjobs"]},
)


def workload_warning_configuration(*, base_url: str, ca_pem: bytes, name: str = "nonroot-mutator-workloads",
                                   timeout_seconds: int = 3) -> dict[str, Any]:
    ca_bundle = base64.b64encode(ca_pem).decode()
    webhooks = [{
        "name": f"workloads-{mode}.nonroot-mutator.dev",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
        "failurePolicy": "Ignore",
        "matchPolicy": "Equivalent",
        "clientConfig": {"url": f"{base_url}/warn/workloads/{mode}", "caBundle": ca_bundle},
        "namespaceSelector": namespace_selector(mode),
        "rules": [{"operations": ["CREATE", "UPDATE"], "scope": "Namespaced", **rule}
                  for rule in WORKLOAD_RULES],
    } for mode in MODES]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": webhooks,
    }
