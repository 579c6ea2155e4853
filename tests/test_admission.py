"""AdmissionReview parsing and target selection, on what a real API server sent."""

from __future__ import annotations

import base64
import json

import pytest

from mutator.decide import admission
from mutator.errors import BadReview
from tests.support.fixtures import review


def targets(name: str) -> admission.Target | None:
    return admission.target(admission.validate(review(name)))


def test_kubectl_run_pod_has_one_container_without_security_context():
    target = targets("pod-create-kubectl-run")
    assert [(c.kind, c.name, c.image, c.pointer) for c in target.containers] == [
        ("containers", "memcached", "docker.io/library/memcached:1.6", "/spec/containers/0")
    ]
    assert target.containers[0].security_context is None
    assert target.pod_security_context == {}


def test_multi_container_pod_lists_init_then_regular_containers():
    target = targets("pod-create-multi")
    assert [(c.name, c.pointer) for c in target.containers] == [
        ("init-setup", "/spec/initContainers/0"),
        ("app", "/spec/containers/0"),
        ("proxy", "/spec/containers/1"),
    ]
    assert target.containers[1].security_context == {"allowPrivilegeEscalation": False}
    assert target.pod_security_context == {"runAsNonRoot": True}


def test_controller_made_pod_is_named_by_generate_name():
    parsed = admission.validate(review("pod-create-from-deployment"))
    assert parsed.name == "example-app-59b7cffd7-*"
    assert [c.image for c in admission.target(parsed).containers] == ["ghcr.io/example/app:2.0"]


def test_dry_run_is_seen_and_decided_like_any_create():
    parsed = admission.validate(review("pod-create-dry-run"))
    assert parsed.dry_run is True
    assert len(admission.target(parsed).containers) == 1


def test_plain_pod_update_is_not_ours():
    assert targets("pod-update-labels") is None


def test_v120_ephemeral_containers_update_targets_only_the_new_container():
    document = review("pod-ephemeralcontainers-update")
    target = admission.target(admission.validate(document))
    assert target.pod_security_context is None
    assert [(c.kind, c.name, c.image) for c in target.containers] == [
        ("ephemeralContainers", "debugger-lab01", "busybox:1.36")
    ]
    index = target.containers[0].pointer.rsplit("/", 1)[1]
    assert target.containers[0].pointer == f"/ephemeralContainers/{index}"
    assert document["request"]["object"]["ephemeralContainers"][int(index)]["name"] == "debugger-lab01"


def test_pod_shaped_ephemeral_update_targets_only_added_containers():
    base = review("pod-create-multi")["request"]["object"]
    old = json.loads(json.dumps(base))
    old["spec"]["ephemeralContainers"] = [{"name": "dbg1", "image": "busybox"}]
    new = json.loads(json.dumps(old))
    new["spec"]["ephemeralContainers"].append({"name": "dbg2", "image": "alpine"})
    document = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "subResource": "ephemeralcontainers", "operation": "UPDATE",
                    "object": new, "oldObject": old},
    }
    target = admission.target(admission.validate(document))
    assert [(c.name, c.pointer) for c in target.containers] == [("dbg2", "/spec/ephemeralContainers/1")]
    assert target.pod_security_context == {"runAsNonRoot": True}


def test_reinvoked_pod_has_both_containers():
    target = targets("pod-create-reinvoked")
    assert [c.name for c in target.containers][-1] == "injected-sidecar"
    assert len(target.containers) == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {}}',
         "apiVersion"),
        (b'{"kind": "Pod", "apiVersion": "admission.k8s.io/v1"}', "expected kind AdmissionReview"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "has no request"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_are_bad_reviews(body, reason):
    with pytest.raises(BadReview, match=reason):
        admission.decode(body)


def mutate(name: str, change) -> dict:
    document = review(name)
    change(document["request"])
    return document


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (mutate("pod-create-multi", lambda r: r.pop("uid")), "request.uid is missing"),
        (mutate("pod-create-multi", lambda r: r.update(uid="")), "request.uid is missing"),
        (mutate("pod-create-multi",
                lambda r: r.update(resource={"group": "apps", "resource": "deployments"})), "pods only"),
        (mutate("pod-create-multi", lambda r: r.pop("operation")), "operation"),
        (mutate("pod-create-multi", lambda r: r.update(object=[1])), "request.object must be an object"),
        (mutate("pod-create-multi", lambda r: r["object"].pop("spec")), "spec must be an object"),
        (mutate("pod-create-multi", lambda r: r["object"]["spec"].update(containers={"a": 1})),
         "containers must be a list"),
        (mutate("pod-create-multi", lambda r: r["object"]["spec"]["containers"][0].pop("name")),
         r"containers\[0\] must be an object with a name"),
        (mutate("pod-create-multi", lambda r: r.update(dryRun="yes")), "dryRun must be a boolean"),
        (mutate("pod-create-multi", lambda r: r["kind"].update(kind="Deployment")), "must carry a Pod"),
    ],
)
def test_malformed_requests_are_bad_reviews(document, reason):
    with pytest.raises(BadReview, match=reason):
        admission.target(admission.validate(document))


def test_oversized_body_is_refused_before_parsing():
    with pytest.raises(BadReview, match="larger than"):
        admission.decode(b" " * (admission.MAX_BODY_BYTES + 1))


def test_response_shape():
    doc = admission.respond("abc", allowed=True, patch=[{"op": "add", "path": "/x", "value": 1}],
                            warnings=["w" * 300])
    response = doc["response"]
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    assert response["uid"] == "abc" and response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == [{"op": "add", "path": "/x", "value": 1}]
    assert len(response["warnings"][0]) == 120
    refused = admission.respond("abc", allowed=False, message="no")["response"]
    assert refused["status"] == {"code": 403, "message": "no", "reason": "Forbidden"}
    assert "patch" not in refused


def test_an_operation_the_api_does_not_define_is_a_bad_review():
    document = review("pod-create-multi")
    document["request"]["operation"] = "PATCH"
    with pytest.raises(BadReview, match=r"request\.operation must be one of CONNECT, CREATE, DELETE, UPDATE"):
        admission.validate(document)
