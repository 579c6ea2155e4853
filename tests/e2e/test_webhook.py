"""The webhook as a real kube-apiserver uses it: namespace routing, patches stored, refusals shown.

Images come from the loopback registry; Pods are stored, never run (no kubelet).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from .cluster import KubeCluster, wait_for
from .conftest import Registered, pod_manifest
from .sidecar import SIDECAR, SidecarInjector
from .webhook_config import LABEL

ADMISSIONS = "nonroot_mutator_admissions_total"


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def namespaces(registered: Registered) -> Iterator[dict[str, str]]:
    kube = registered.kube
    names = {mode: unique(f"e2e-{mode}") for mode in ("enforce", "warn", "audit", "none")}
    for mode, name in names.items():
        kube.create_namespace(name, {LABEL: mode} if mode != "none" else {})
    yield names
    kube.kubectl("delete", "namespace", *names.values(), "--wait=false")


def create(kube: KubeCluster, namespace: str, manifest: dict[str, Any], *extra: str,
           check: bool = True) -> tuple[dict[str, Any] | None, str]:
    """kubectl create; returns the object the API server stored and kubectl's stderr (warnings)."""
    result = kube.kubectl("-n", namespace, "create", "-f", "-", "-o", "json", *extra,
                          input=json.dumps(manifest), check=check)
    return (json.loads(result.stdout) if result.returncode == 0 else None), result.stderr


def stored(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    return kube.api_get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def security_contexts(pod: dict[str, Any], kind: str = "containers") -> list[Any]:
    return [c.get("securityContext") for c in pod["spec"].get(kind, [])]


def test_enforce_namespace_stores_the_patched_pod(registered, namespaces, images):
    kube = registered.kube
    manifest = pod_manifest("named", ("app", images["named-base"]), ("side", images["numeric"]),
                            initContainers=[{"name": "init", "image": images["name-group"]}])
    _, warnings = create(kube, namespaces["enforce"], manifest)
    pod = stored(kube, namespaces["enforce"], "named")
    assert security_contexts(pod) == [
        {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
        None,  # numeric USER: the kubelet verifies it itself
    ]
    assert security_contexts(pod, "initContainers") == [
        {"runAsUser": 1000, "runAsGroup": 50, "runAsNonRoot": True}
    ]
    assert not pod["spec"].get("securityContext")  # never the pod level: sidecars must not inherit
    assert "Warning" not in warnings


def test_unlabelled_namespace_is_never_sent_to_us(registered, namespaces, images):
    kube = registered.kube
    before = registered.metric(ADMISSIONS)
    create(kube, namespaces["none"], pod_manifest("plain", ("app", images["named-base"])))
    create(kube, namespaces["none"], pod_manifest("root", ("app", images["no-user"])))
    assert security_contexts(stored(kube, namespaces["none"], "plain")) == [None]
    assert registered.metric(ADMISSIONS) == before


def test_kube_system_is_never_sent_to_us(registered, images):
    kube = registered.kube
    name = unique("root")
    before = registered.metric(ADMISSIONS)
    # Labelled as a careless admin might, and with the name label that 1.21+ sets by itself.
    kube.kubectl("label", "namespace", "kube-system", f"{LABEL}=enforce",
                 "kubernetes.io/metadata.name=kube-system", "--overwrite")
    try:
        create(kube, "kube-system", pod_manifest(name, ("app", images["no-user"])))
    finally:
        kube.kubectl("label", "namespace", "kube-system", f"{LABEL}-", "kubernetes.io/metadata.name-")
        kube.kubectl("-n", "kube-system", "delete", "pod", name, "--ignore-not-found")
    assert registered.metric(ADMISSIONS) == before


def test_root_image_is_refused_with_our_message(registered, namespaces, images):
    kube = registered.kube
    pod, stderr = create(kube, namespaces["enforce"], pod_manifest("root", ("web", images["no-user"])),
                         check=False)
    assert pod is None
    assert "admission webhook \"enforce.nonroot-mutator.dev\" denied the request" in stderr
    assert f'container "web" (image {images["no-user"]}) would run as root: its image sets no USER' in stderr
    assert "USER 1000" in stderr
    assert kube.api_get(f"/api/v1/namespaces/{namespaces['enforce']}/pods/root") is None


def test_warn_namespace_patches_and_warns_about_root(registered, namespaces, images):
    kube = registered.kube
    _, warnings = create(kube, namespaces["warn"], pod_manifest(
        "mixed", ("app", images["named-upper"]), ("web", images["no-user"])))
    pod = stored(kube, namespaces["warn"], "mixed")
    assert security_contexts(pod) == [{"runAsUser": 1001, "runAsGroup": 1002}, None]
    assert (f'Warning: nonroot-mutator: container "web" ({images["no-user"]}) runs as root' in warnings
            and "fix: USER 1000 or runAsUser: 1000" in warnings)


def test_audit_namespace_never_patches_but_says_what_enforce_would_do(registered, namespaces, images):
    kube = registered.kube
    _, warnings = create(kube, namespaces["audit"], pod_manifest(
        "audited", ("app", images["named-base"]), ("web", images["root-name"])))
    assert security_contexts(stored(kube, namespaces["audit"], "audited")) == [None, None]
    said = 'audit: would set runAsUser=1000 runAsGroup=1000 runAsNonRoot=true on container "app"'
    assert f"Warning: {said}" in warnings
    assert f'Warning: audit: would refuse container "web" ({images["root-name"]}) runs as root' in warnings


def test_deployment_replicas_are_all_stored_patched(registered, namespaces, images):
    kube = registered.kube
    namespace = namespaces["enforce"]
    kube.kubectl("-n", namespace, "create", "deployment", "web", f"--image={images['named-upper']}",
                 "--replicas=3")

    def pods() -> list[dict[str, Any]] | None:
        items = kube.api_get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dweb")["items"]
        return items if len(items) == 3 else None

    replicas = wait_for(pods, timeout=60, what="3 replicas of deployment web")
    for pod in replicas:
        assert pod["metadata"]["generateName"].startswith("web-")
        assert security_contexts(pod) == [{"runAsUser": 1001, "runAsGroup": 1002, "runAsNonRoot": True}]


def test_server_side_dry_run_shows_the_patch_and_leaves_nothing(registered, namespaces, images):
    kube = registered.kube
    namespace = namespaces["enforce"]
    result = kube.kubectl("-n", namespace, "apply", "--dry-run=server", "-o", "json", "-f", "-",
                          input=json.dumps(pod_manifest("dry", ("app", images["named-base"]))))
    assert security_contexts(json.loads(result.stdout))[0]["runAsUser"] == 1000
    assert kube.api_get(f"/api/v1/namespaces/{namespace}/pods/dry") is None
    refused = kube.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", "-", check=False,
                           input=json.dumps(pod_manifest("dry-root", ("app", images["no-user"]))))
    assert refused.returncode != 0 and "would run as root" in refused.stderr


def test_sidecar_added_after_us_is_patched_on_reinvocation(registered, namespaces, images):
    kube = registered.kube
    namespace = namespaces["enforce"]
    label = "e2e/inject-sidecar"
    with SidecarInjector(images["named-upper"]) as injector:
        kube.kubectl("apply", "-f", "-", input=json.dumps(injector.configuration(label=label)))
        try:
            admissions = registered.metric(f'{ADMISSIONS}{{mode="enforce"')
            patches = registered.metric('nonroot_mutator_containers_total{mode="enforce",outcome="patch"}')
            create(kube, namespace, pod_manifest("meshed", ("app", images["named-base"]),
                                                 labels={label: "true"}))
        finally:
            kube.kubectl("delete", "mutatingwebhookconfiguration", "zz-sidecar-injector")
    pod = stored(kube, namespace, "meshed")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", SIDECAR]
    assert security_contexts(pod) == [
        {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
        {"runAsUser": 1001, "runAsGroup": 1002, "runAsNonRoot": True},
    ]
    assert injector.calls == 1
    # called twice (first pass, then re-invoked after the injector); "app" was patched only once
    assert registered.metric(f'{ADMISSIONS}{{mode="enforce"') == admissions + 2
    assert registered.metric(
        'nonroot_mutator_containers_total{mode="enforce",outcome="patch"}') == patches + 2


def test_unknown_namespace_mode_is_not_routed(registered, images):
    kube = registered.kube
    namespace = unique("e2e-strict")
    kube.create_namespace(namespace, {LABEL: "strict"})
    before = registered.metric(ADMISSIONS)
    try:
        create(kube, namespace, pod_manifest("p", ("app", images["named-base"])))
        assert security_contexts(stored(kube, namespace, "p")) == [None]
        assert registered.metric(ADMISSIONS) == before
    finally:
        kube.kubectl("delete", "namespace", namespace, "--wait=false")
