"""The chart's objects as the real API server takes them: RBAC that grants exactly what the server needs,
the webhook configuration stored as rendered, and a caBundle that `lookup` keeps across upgrades."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess

import pytest
import yaml

from tests.support.chart import CHART, NAMESPACE, RELEASE, helm, render

from .cluster import KubeCluster
from .conftest import Registered, server_side_apply
from .webhook_config import KUBE_VERSION, LABEL

ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-nonroot-mutator"


def can_i(kube: KubeCluster, verb: str, resource: str, namespace: str = "default") -> bool:
    result = kube.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={ACCOUNT}", check=False)
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize(("verb", "resource", "allowed"), [
    ("list", "pods", True), ("watch", "pods", True), ("list", "namespaces", True),
    ("get", "secrets", True), ("list", "serviceaccounts", True),
    ("get", "pods", False), ("create", "pods", False), ("patch", "pods", False), ("delete", "pods", False),
    ("create", "secrets", False), ("get", "configmaps", False), ("get", "namespaces", False),
    ("create", "mutatingwebhookconfigurations", False),
])
def test_chart_rbac_grants_exactly_what_the_server_reads(registered: Registered, verb, resource, allowed):
    assert can_i(registered.kube, verb, resource) is allowed


def test_stored_webhook_configuration_is_the_charts(registered: Registered):
    name = registered.configuration["metadata"]["name"]
    stored = registered.kube.get_json("get", "mutatingwebhookconfiguration", name, "--show-managed-fields")
    rendered = {hook["name"]: hook for hook in registered.configuration["webhooks"]}
    assert sorted(rendered) == sorted(hook["name"] for hook in stored["webhooks"])
    for hook in stored["webhooks"]:
        mine = rendered[hook["name"]]
        for key in ("namespaceSelector", "rules", "failurePolicy", "sideEffects", "timeoutSeconds",
                    "reinvocationPolicy", "matchPolicy", "admissionReviewVersions", "clientConfig"):
            assert hook[key] == mine[key], key
        assert hook["clientConfig"]["url"].startswith(registered.webhook.url + "/mutate/")
    managers = {entry["manager"] for entry in stored["metadata"]["managedFields"]}
    assert "nonroot-mutator-e2e" in managers  # server-side apply


def test_release_namespace_is_never_sent_to_us(registered: Registered, images):
    kube = registered.kube
    before = registered.metric("nonroot_mutator_admissions_total")
    kube.kubectl("label", "namespace", NAMESPACE, f"{LABEL}=enforce",
                 f"kubernetes.io/metadata.name={NAMESPACE}", "--overwrite")
    name = f"root-{secrets.token_hex(3)}"
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "app", "image": images["no-user"]}]}}
    try:
        kube.kubectl("-n", NAMESPACE, "create", "-f", "-", input=json.dumps(manifest))
    finally:
        kube.kubectl("label", "namespace", NAMESPACE, f"{LABEL}-", "kubernetes.io/metadata.name-")
        kube.kubectl("-n", NAMESPACE, "delete", "pod", name, "--ignore-not-found")
    assert registered.metric("nonroot_mutator_admissions_total") == before


def test_generated_ca_is_kept_across_upgrades_by_lookup(registered: Registered):
    """Render as `helm upgrade` does (lookup against the live API server): the existing CA stays."""
    kube = registered.kube

    def template(*extra: str) -> list[dict]:
        result = subprocess.run(
            [helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
             "--kube-version", KUBE_VERSION, f"--kubeconfig={kube.kubeconfig}", *extra,
             "--show-only", "templates/tls.yaml", "--show-only", "templates/webhook.yaml"],
            capture_output=True, text=True, timeout=60, check=True)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    first = template()
    [secret] = [o for o in first if o["kind"] == "Secret"]
    server_side_apply(kube, [secret])
    try:
        upgraded = template("--dry-run=server")
        [again] = [o for o in upgraded if o["kind"] == "Secret"]
        [configuration] = [o for o in upgraded if o["kind"] == "MutatingWebhookConfiguration"]
        assert again["data"] == secret["data"]
        bundles = {h["clientConfig"]["caBundle"] for h in configuration["webhooks"]}
        assert bundles == {secret["data"]["ca.crt"]}
        assert base64.b64decode(secret["data"]["ca.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
        # and without the cluster (plain `helm template`), a fresh CA each time
        assert next(o for o in template() if o["kind"] == "Secret")["data"] != secret["data"]
    finally:
        kube.kubectl("-n", NAMESPACE, "delete", "secret", secret["metadata"]["name"], "--ignore-not-found")


@pytest.mark.parametrize("values", [
    {}, {"autoscaling": {"enabled": True}, "networkPolicy": {"enabled": True}},
], ids=["defaults", "hpa-networkpolicy"])
def test_api_server_accepts_every_object_the_chart_renders(registered: Registered, values):
    """A server-side dry run: the real API server's own validation of the Deployment, PDB, HPA, etc."""
    objects = [o for o in render(values, kube_version=KUBE_VERSION)
               if not o["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/"))]
    result = registered.kube.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=nonroot-mutator-e2e", "-f", "-",
        input=yaml.safe_dump_all(objects))
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len(objects), result.stdout
