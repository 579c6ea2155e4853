"""``mutator serve`` over real HTTPS, fed the AdmissionReviews a real kube-apiserver sent.

The fixtures name public images; each test maps them onto images in the
loopback registry, so every answer is decided from a real registry.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
import urllib3

from tests.support.fixtures import review, with_images
from tests.support.webhook import WebhookProcess, serving

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def webhook(registry, silent_registry, tmp_path_factory) -> Iterator[WebhookProcess]:
    with serving(tmp_path_factory.mktemp("webhook"), registry.host, silent_registry) as process:
        yield process


@pytest.fixture(scope="module")
def http(webhook: WebhookProcess) -> urllib3.PoolManager:
    return webhook.https()


def post(http, webhook, mode: str, body: Any, *, query: str = "?timeout=10s") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.request("POST", f"{webhook.url}/mutate/{mode}{query}", body=data,
                            headers={"Content-Type": "application/json"})
    return response.status, json.loads(response.data) if response.data else None


def answer(http, webhook, mode: str, document: dict) -> dict:
    status, reply = post(http, webhook, mode, document)
    assert status == 200, reply
    assert reply["apiVersion"] == "admission.k8s.io/v1" and reply["kind"] == "AdmissionReview"
    assert reply["response"]["uid"] == document["request"]["uid"]
    return reply["response"]


def applied(document: dict, response: dict) -> dict:
    assert response["allowed"] is True
    ops = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    if ops:
        assert response["patchType"] == "JSONPatch"
    return jsonpatch.apply_patch(document["request"]["object"], ops)


def reinvoke(document: dict, obj: dict) -> dict:
    again = json.loads(json.dumps(document))
    again["request"]["object"] = obj
    again["request"]["uid"] = document["request"]["uid"] + "-again"
    return again


def test_kubectl_run_pod_gets_the_image_users_uid(http, webhook, images):
    document = with_images(review("pod-create-kubectl-run"),
                           {"docker.io/library/memcached:1.6": images["named-base"]})
    response = answer(http, webhook, "enforce", document)
    pod = applied(document, response)
    assert pod["spec"]["containers"][0]["securityContext"] == {
        "runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
    }
    assert pod["spec"]["securityContext"] == {}  # the pod level is never touched
    # the API server calls again after other webhooks: nothing more to do
    assert "patch" not in answer(http, webhook, "enforce", reinvoke(document, pod))


def test_multi_container_pod_patches_init_and_named_containers_only(http, webhook, images):
    document = with_images(review("pod-create-multi"), {
        "busybox:1.36": images["named-upper"],
        "node:20-alpine": images["name-group"],
        "nginx:1.25": images["numeric"],
    })
    pod = applied(document, answer(http, webhook, "enforce", document))
    spec = pod["spec"]
    assert spec["initContainers"][0]["securityContext"] == {
        "runAsUser": 1001, "runAsGroup": 1002, "runAsNonRoot": True,
    }
    assert spec["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "runAsUser": 1000, "runAsGroup": 50, "runAsNonRoot": True,
    }
    assert "securityContext" not in spec["containers"][1]


def test_root_sidecar_is_refused_in_enforce_and_reported_elsewhere(http, webhook, images):
    document = with_images(review("pod-create-multi"), {
        "busybox:1.36": images["named-base"],
        "node:20-alpine": images["named-base"],
        "nginx:1.25": images["no-user"],
    })
    refused = answer(http, webhook, "enforce", document)
    assert refused["allowed"] is False and "patch" not in refused
    assert refused["status"]["code"] == 403
    message = refused["status"]["message"]
    proxy = images["no-user"]
    assert f'container "proxy" (image {proxy}) would run as root: its image sets no USER' in message
    assert "USER 1000" in message and "securityContext.runAsUser" in message

    warned = answer(http, webhook, "warn", document)
    pod = applied(document, warned)
    assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == 1000
    assert any(f'container "proxy" ({proxy}) runs as root' in w for w in warned["warnings"])

    audited = answer(http, webhook, "audit", document)
    assert audited["allowed"] is True and "patch" not in audited
    said = "audit: would set runAsUser=1000 runAsGroup=1000 runAsNonRoot=true on container \"app\""
    assert any(w.startswith(said) for w in audited["warnings"])
    assert all(len(w) <= 120 for w in audited["warnings"])


def test_controller_made_pod(http, webhook, images):
    document = with_images(review("pod-create-from-deployment"),
                           {"ghcr.io/example/app:2.0": images["docker-schema2"]})
    pod = applied(document, answer(http, webhook, "enforce", document))
    assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == 1500


def test_dry_run_is_decided_like_a_real_create(http, webhook, images):
    document = with_images(review("pod-create-dry-run"),
                           {"docker.io/library/redis:7.2": images["root-name"]})
    refused = answer(http, webhook, "enforce", document)
    assert refused["allowed"] is False
    assert "USER 'toor' is uid 0 in its /etc/passwd" in refused["status"]["message"]


def test_label_update_is_allowed_untouched(http, webhook):
    response = answer(http, webhook, "enforce", review("pod-update-labels"))
    assert response == {"uid": review("pod-update-labels")["request"]["uid"], "allowed": True,
                        "auditAnnotations": {"mode": "enforce", "decision": "untouched", "containers": "[]"}}


def test_v120_ephemeral_container_is_patched_where_it_sits(http, webhook, images):
    document = with_images(review("pod-ephemeralcontainers-update"), {"busybox:1.36": images["named-base"]})
    obj = applied(document, answer(http, webhook, "enforce", document))
    added = [c for c in obj["ephemeralContainers"] if c["name"] == "debugger-lab01"]
    assert added[0]["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
    assert "patch" not in answer(http, webhook, "enforce", reinvoke(document, obj))


def test_reinvocation_after_a_sidecar_injector(http, webhook, images):
    document = with_images(review("pod-create-reinvoked"), {
        "docker.io/library/busybox:1.36": images["named-upper"],
    })
    first_image = document["request"]["object"]["spec"]["containers"][0]["image"]
    document = with_images(document, {first_image: images["named-base"]})
    pod = applied(document, answer(http, webhook, "enforce", document))
    users = [c["securityContext"]["runAsUser"] for c in pod["spec"]["containers"]]
    assert users == [1000, 1001]
    assert "patch" not in answer(http, webhook, "enforce", reinvoke(document, pod))


def test_registry_timeout_answers_before_the_api_servers_deadline(http, webhook, silent_registry):
    document = with_images(review("pod-create-kubectl-run"),
                           {"docker.io/library/memcached:1.6": f"{silent_registry}/slow/app:1"})
    for mode, allowed in (("enforce", False), ("warn", True), ("audit", True)):
        document["request"]["uid"] = f"timeout-{mode}"
        expired = webhook.metric(f'nonroot_mutator_deadline_expired_total{{mode="{mode}"}}')
        started = time.monotonic()
        status, reply = post(http, webhook, mode, document, query="?timeout=2s")
        elapsed = time.monotonic() - started
        assert status == 200 and elapsed < 2.0, elapsed
        response = reply["response"]
        assert response["allowed"] is allowed
        text = response["status"]["message"] if not allowed else " ".join(response["warnings"])
        assert "admission deadline" in text
        # the SREs' signal that the registry is slower than the API server's patience
        assert webhook.metric(f'nonroot_mutator_deadline_expired_total{{mode="{mode}"}}') == expired + 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{oops", "not valid JSON"),
        (json.dumps({"kind": "Pod", "apiVersion": "v1"}).encode(), "expected kind AdmissionReview"),
        (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
                     "request": {"operation": "CREATE"}}).encode(), "request.uid is missing"),
        (b"{" + b" " * (3 * 1024 * 1024) + b"}", "larger than"),
    ],
)
def test_malformed_reviews_get_400_with_a_reason(http, webhook, body, reason):
    status, reply = post(http, webhook, "enforce", body)
    assert status == 400 and reason in reply["error"]


def test_unknown_mode_and_health_endpoints(http, webhook):
    assert http.request("POST", f"{webhook.url}/mutate/strict", body=b"{}").status == 404
    assert http.request("GET", f"{webhook.url}/healthz").data == b"ok\n"
    assert http.request("GET", f"{webhook.url}/readyz").status == 200


def test_metrics_count_admissions_and_cache(http, webhook, images):
    document = with_images(review("pod-create-kubectl-run"),
                           {"docker.io/library/memcached:1.6": images["name-gid"]})

    hit = 'nonroot_mutator_cache_lookups_total{cache="image",result="hit"}'
    decision = 'nonroot_mutator_cache_lookups_total{cache="decision",result="hit"}'
    patched = 'nonroot_mutator_admissions_total{mode="enforce",result="patched"}'
    answer(http, webhook, "enforce", document)
    before = {name: webhook.metric(name) for name in (hit, decision, patched)}
    other = copy.deepcopy(document)  # another Pod of the same image: decided, from the image cache
    other["request"]["name"] = other["request"]["object"]["metadata"]["name"] = "other"
    answer(http, webhook, "enforce", other)
    assert webhook.metric(hit) == before[hit] + 1 and webhook.metric(decision) == before[decision]
    answer(http, webhook, "enforce", other)  # its replica: answered from the decisions memo
    assert webhook.metric(hit) == before[hit] + 1 and webhook.metric(decision) == before[decision] + 1
    assert webhook.metric(patched) == before[patched] + 2
    assert webhook.metric("nonroot_mutator_admission_duration_seconds_count") >= 2


def test_a_repeated_pod_is_answered_from_the_decisions_memo_as_it_was_decided(http, webhook, images):
    document = with_images(review("pod-create-from-deployment"),
                           {"ghcr.io/example/app:2.0": images["name-gid"]})
    document["request"]["object"]["metadata"]["generateName"] = "memo-test-"
    hit = 'nonroot_mutator_cache_lookups_total{cache="decision",result="hit"}'
    first = answer(http, webhook, "enforce", document)
    before = webhook.metric(hit)
    document["request"]["uid"] = "second-replica"
    second = answer(http, webhook, "enforce", document)
    assert webhook.metric(hit) == before + 1
    assert second["uid"] == "second-replica"
    assert {k: v for k, v in second.items() if k != "uid"} == {k: v for k, v in first.items() if k != "uid"}
    assert second["patch"]  # the patch itself, not only an allow
