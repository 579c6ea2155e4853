"""The objects the e2e tier registers with the real API server, rendered by ``helm template`` from the chart.

So the chart is what the API server exercises: its webhook configuration (one webhook per mode, each
selecting namespaces by the ``nonroot-mutator/mode`` label and calling its own URL path) and its RBAC.
The only difference from an in-cluster install is ``webhook.url``: the API server calls the test's
loopback webhook rather than a Service, trusting the test certificate (``webhook.caBundle``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from tests.support.chart import NAMESPACE, RELEASE, render

LABEL = "nonroot-mutator/mode"
MODES = ("enforce", "warn", "audit")
FAILURE_POLICY = {"enforce": "Fail", "warn": "Ignore", "audit": "Ignore"}  # the chart's defaults
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
KUBE_VERSION = "1.20.2"  # the e2e API server's


def chart_values(*, base_url: str, ca_pem: bytes, timeout_seconds: int | None = None,
                 failure_policy: Mapping[str, str] | None = None, name: str | None = None) -> dict[str, Any]:
    """Values for a webhook at *base_url*; *name* names the objects (for a second registration)."""
    webhook: dict[str, Any] = {"url": base_url, "caBundle": base64.b64encode(ca_pem).decode()}
    if timeout_seconds is not None:
        webhook["timeoutSeconds"] = timeout_seconds
    if failure_policy is not None:
        webhook["failurePolicy"] = dict(failure_policy)
    return {"webhook": webhook, **({"fullnameOverride": name} if name else {})}


def rendered(*, base_url: str, ca_pem: bytes, **options: Any) -> list[dict[str, Any]]:
    """Every object the chart renders for a webhook at *base_url* trusting *ca_pem*."""
    return render(chart_values(base_url=base_url, ca_pem=ca_pem, **options), release=RELEASE,
                  namespace=NAMESPACE, kube_version=KUBE_VERSION)


def mutating_webhook_configuration(*, base_url: str, ca_pem: bytes, **options: Any) -> dict[str, Any]:
    [configuration] = [o for o in rendered(base_url=base_url, ca_pem=ca_pem, **options)
                       if o["kind"] == "MutatingWebhookConfiguration"]
    return configuration


def rbac_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in RBAC_KINDS]


def workload_warning_configuration(*, base_url: str, ca_pem: bytes, **options: Any) -> dict[str, Any]:
    """The chart's apply-time warning webhook (validating, fail-open) for a webhook at *base_url*."""
    values = chart_values(base_url=base_url, ca_pem=ca_pem, **options)
    values["webhook"]["workloadWarnings"] = {"enabled": True}
    objects = render(values, release=RELEASE, namespace=NAMESPACE, kube_version=KUBE_VERSION)
    [configuration] = [o for o in objects if o["kind"] == "ValidatingWebhookConfiguration"]
    return configuration
