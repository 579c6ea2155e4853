"""``/warn/workloads`` and the audit evidence of ``/mutate``, over HTTPS against the loopback registry."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
import urllib3

from mutator.decide.evidence import ANNOTATION
from tests.support.faultproxy import Fault
from tests.support.fixtures import review, with_images
from tests.support.net import wait_for
from tests.support.webhook import WebhookProcess, serving

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def webhook(registry, silent_registry, fault_proxy, tmp_path_factory) -> Iterator[WebhookProcess]:
    hosts = (registry.host, silent_registry, fault_proxy.host)
    with serving(tmp_path_factory.mktemp("warn"), *hosts) as process:
        yield process


@pytest.fixture(scope="module")
def http(webhook: WebhookProcess) -> urllib3.PoolManager:
    return webhook.https()


def workload_review(kind: str, group: str, resource: str, obj: dict[str, Any],
                    operation: str = "CREATE") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "operation": operation, "namespace": "team",
        "name": obj["metadata"]["name"],
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "object": obj, "oldObject": obj if operation == "UPDATE" else None,
    }}


def deployment(name: str, *containers: tuple[str, str]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": n, "image": i} for n, i in containers]}}}}


def cronjob(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": {
        "schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "job", "image": image}]}}}}}}


def post(http, url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = http.request("POST", url, body=data, headers={"Content-Type": "application/json"})
    return reply.status, json.loads(reply.data)


def warned(http, webhook, document: dict[str, Any], path: str = "/warn/workloads",
           query: str = "?timeout=3s") -> dict[str, Any]:
    status, reply = post(http, f"{webhook.url}{path}{query}", document)
    assert status == 200, reply
    response = reply["response"]
    assert response["uid"] == document["request"]["uid"] and response["allowed"] is True
    assert "patch" not in response and "status" not in response  # never patches, never refuses
    return response


def test_deployment_warnings_say_what_happens_to_each_container(http, webhook, images):
    document = workload_review("Deployment", "apps", "deployments", deployment(
        "web", ("app", images["named-upper"]), ("proxy", images["no-user"]), ("ok", images["numeric"])))
    for operation in ("CREATE", "UPDATE"):
        document["request"]["operation"] = operation
        lines = warned(http, webhook, document)["warnings"]
        # the registry's host:port is left out to keep the Dockerfile line within 120 characters
        assert lines == [
            'deployment/web: container "app" will run as uid 1001: named-upper:v1 (USER node); '
            "Dockerfile: USER 1001:1002",
            'deployment/web: container "proxy" would be refused: runs as root: no-user:v1 (no USER); '
            "Dockerfile: USER 1000:1000",
        ]
        assert all(len(line) <= 120 for line in lines)
    warn_mode = warned(http, webhook, document, path="/warn/workloads/warn")["warnings"]
    assert warn_mode[1].startswith('deployment/web: container "proxy" will run as root')


def test_every_workload_kind_is_read(http, webhook, images):
    cases = [("StatefulSet", "apps", "statefulsets"), ("DaemonSet", "apps", "daemonsets"),
             ("ReplicaSet", "apps", "replicasets"), ("Job", "batch", "jobs")]
    for kind, group, resource in cases:
        obj = deployment("w", ("app", images["root-name"]))
        obj["kind"] = kind
        (line,) = warned(http, webhook, workload_review(kind, group, resource, obj))["warnings"]
        assert line.startswith(f'{kind.lower()}/w: container "app" would be refused: runs as root')
        assert "(USER 'toor' is uid 0)" in line
    (line,) = warned(http, webhook, workload_review(
        "CronJob", "batch", "cronjobs", cronjob("nightly", images["name-gid"])))["warnings"]
    assert line.startswith('cronjob/nightly: container "job" will run as uid 1000')
    assert line.endswith("Dockerfile: USER 1000:4242")


def test_a_fine_workload_gets_no_warning(http, webhook, images):
    response = warned(http, webhook, workload_review(
        "Deployment", "apps", "deployments", deployment("fine", ("app", images["numeric"]))))
    assert "warnings" not in response


def test_a_cold_image_is_answered_at_once_and_its_lookup_goes_on_into_the_cache(http, webhook, fault_proxy,
                                                                               images):
    resolved = 'nonroot_mutator_registry_lookups_total{result="resolved"}'
    before = webhook.metric(resolved)
    # behind a registry that takes 1 s to answer every manifest request: a lookup restarted per
    # request would never finish in the 50 ms each one waits; only one that goes on does
    fault_proxy.set_fault(Fault("slow", seconds=1.0, match="/manifests/"))
    slow_image = images["named-base"].replace(images["named-base"].split("/", 1)[0], fault_proxy.host, 1)
    document = workload_review("Deployment", "apps", "deployments", deployment("cold", ("app", slow_image)))
    # ?timeout=0.3s leaves 50 ms: the image is answered "not checked yet", never waited for
    (first,) = warned(http, webhook, document, query="?timeout=0.3s")["warnings"]
    assert 'container "app" not checked yet' in first

    def warm() -> list[str] | None:
        lines = warned(http, webhook, document, query="?timeout=0.3s")["warnings"]
        return lines if "will run as uid 1000" in lines[0] else None

    try:
        wait_for(warm, timeout=60, what="the lookup started by the first warning to reach the cache")
    finally:
        fault_proxy.set_fault(None)
    assert webhook.metric(resolved) == before + 1  # one lookup, joined by every retry, then cached


def test_a_cold_image_is_answered_within_the_budget(http, webhook, silent_registry):
    document = workload_review("Deployment", "apps", "deployments",
                               deployment("slow", ("app", f"{silent_registry}/slow/app:1")))
    started = time.monotonic()
    (line,) = warned(http, webhook, document, query="?timeout=10s")["warnings"]
    assert time.monotonic() - started < 2.0  # the budget, not the API server's 10 s
    assert 'container "app" not checked yet' in line


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda r: r.update(resource={"group": "", "version": "v1", "resource": "pods"}), "only"),
    (lambda r: r["kind"].update(kind="Pod"), "must carry a Deployment"),
    (lambda r: r["object"]["spec"].pop("template"), "has no spec.template"),
])
def test_malformed_workload_reviews_get_400(http, webhook, images, mutate, reason):
    document = workload_review("Deployment", "apps", "deployments", deployment("x", ("a", "b")))
    mutate(document["request"])
    status, reply = post(http, f"{webhook.url}/warn/workloads", document)
    assert status == 400 and reason in reply["error"]


def test_the_pod_routes_still_refuse_workloads(http, webhook):
    document = workload_review("Deployment", "apps", "deployments", deployment("x", ("a", "b")))
    status, reply = post(http, f"{webhook.url}/mutate/enforce", document)
    assert status == 400 and "pods only" in reply["error"]


def test_every_pod_decision_carries_audit_annotations_and_the_run_as_record(http, webhook, images):
    document = with_images(review("pod-create-multi"), {
        "busybox:1.36": images["named-upper"], "node:20-alpine": images["name-group"],
        "nginx:1.25": images["numeric"]})
    status, reply = post(http, f"{webhook.url}/mutate/enforce?timeout=10s", document)
    response = reply["response"]
    assert status == 200 and response["auditAnnotations"]["decision"] == "patched"
    entries = {e["name"]: e for e in json.loads(response["auditAnnotations"]["containers"])}
    assert entries["app"]["uid"] == 1000 and entries["app"]["gid"] == 50
    assert entries["app"]["user"] == "app:staff" and entries["app"]["digest"].startswith("sha256:")
    assert entries["proxy"]["outcome"] == "skip"
    ops = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply_patch(document["request"]["object"], ops)
    record = json.loads(pod["metadata"]["annotations"][ANNOTATION])
    assert set(record) == {"app", "init-setup"}  # the two named-user containers, not the numeric one
    assert record["init-setup"]["uid"] == 1001 and record["init-setup"]["user"] == "node"
    assert record["init-setup"]["digest"] == entries["init-setup"]["digest"]
    assert record["init-setup"]["layer"].startswith("sha256:")  # the layer whose /etc/passwd named node
    # reinvoked with our own result: nothing more to patch, the record is left as it is
    again = json.loads(json.dumps(document))
    again["request"].update(uid="again", object=pod)
    _, second = post(http, f"{webhook.url}/mutate/enforce?timeout=10s", again)
    assert "patch" not in second["response"]
    assert second["response"]["auditAnnotations"]["decision"] == "allowed"

    refused = with_images(review("pod-create-multi"), {
        "busybox:1.36": images["named-upper"], "node:20-alpine": images["no-user"],
        "nginx:1.25": images["numeric"]})
    _, reply = post(http, f"{webhook.url}/mutate/enforce?timeout=10s", refused)
    notes = reply["response"]["auditAnnotations"]
    assert notes["decision"] == "refused" and notes["mode"] == "enforce"
    assert '"outcome":"root"' in notes["containers"]


@pytest.mark.parametrize("resource", [["deployments"], {"r": 1}, None, 7])
def test_a_resource_of_the_wrong_type_is_a_400_on_both_routes(http, webhook, resource):
    document = workload_review("Deployment", "apps", "deployments", deployment("x", ("a", "b")))
    document["request"]["resource"]["resource"] = resource
    for route in ("/warn/workloads", "/mutate/enforce"):
        status, reply = post(http, f"{webhook.url}{route}", document)
        assert status == 400 and "only, got resource" in reply["error"]
