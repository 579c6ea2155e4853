"""Pure: the pod template in every kind, findings joined to the decision, warning lines, evidence."""

from __future__ import annotations

import json
from typing import Any

import jsonpatch
import pytest

from mutator.decide import evidence, feedback, findings, policy, workloads
from mutator.decide.admission import MAX_WARNING_CHARS
from mutator.decide.images import ImageFailure, ImageUser
from mutator.decide.policy import Mode
from mutator.errors import BadReview

POD_SPEC = {"containers": [{"name": "app", "image": "named"}]}


def manifest(kind: str, spec: dict[str, Any] = POD_SPEC, name: str = "web") -> dict[str, Any]:
    template = {"metadata": {"labels": {"a": "b"}}, "spec": spec}
    body: dict[str, Any] = {
        "Pod": {"spec": spec},
        "PodTemplate": {"template": template},
        "CronJob": {"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}},
    }.get(kind, {"spec": {"template": template}})
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "team"}, **body}


RESOLVED = {
    "named": ImageUser("named", "r/named:1", "sha256:" + "a" * 64, "node", 1000, 1001),
    "root": ImageUser("root", "r/root:1", "sha256:" + "b" * 64, "", 0, 0),
    "numeric": ImageUser("numeric", "r/numeric:1", "sha256:" + "c" * 64, "1234", 1234, None),
    "ghost": ImageUser("ghost", "r/ghost:1", "sha256:" + "d" * 64, "ghost", None, None,
                       problem="user 'ghost' not found in /etc/passwd"),
    "down": ImageFailure("down", "registry unreachable", temporary=True),
}


@pytest.mark.parametrize(("kind", "pointer"), [
    ("Pod", "/spec"),
    ("Deployment", "/spec/template/spec"),
    ("StatefulSet", "/spec/template/spec"),
    ("DaemonSet", "/spec/template/spec"),
    ("ReplicaSet", "/spec/template/spec"),
    ("ReplicationController", "/spec/template/spec"),
    ("Job", "/spec/template/spec"),
    ("CronJob", "/spec/jobTemplate/spec/template/spec"),
    ("PodTemplate", "/template/spec"),
])
def test_every_kind_finds_its_pod_spec_and_the_patch_lands_there(kind, pointer):
    obj = manifest(kind)
    workload = workloads.of(obj)
    assert workload.spec_pointer == pointer and workload.label == f"{kind.lower()}/web"
    assert workload.target is not None
    decision = policy.decide(workload.target, RESOLVED, Mode.ENFORCE)
    patched = jsonpatch.apply_patch(obj, list(decision.patch))
    node = patched
    for key in pointer.strip("/").split("/"):
        node = node[key]
    assert node["containers"][0]["securityContext"] == {
        "runAsUser": 1000, "runAsGroup": 1001, "runAsNonRoot": True}


@pytest.mark.parametrize("obj", [
    {"kind": "Deployment", "spec": {}},
    {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": []}}}},
    {"kind": "Job", "spec": {"template": {"spec": {"containers": "app"}}}},
    {"kind": "Service", "spec": {}},
])
def test_malformed_or_unknown_kinds_are_bad_input(obj):
    with pytest.raises(BadReview):
        workloads.of(obj)


def test_windows_templates_are_not_ours():
    spec = {**POD_SPEC, "os": {"name": "windows"}}
    assert workloads.of(manifest("Deployment", spec)).target is None


def decided(spec: dict[str, Any], mode: Mode = Mode.ENFORCE) -> list[findings.Finding]:
    target = workloads.of(manifest("Deployment", spec)).target
    assert target is not None
    return findings.collect(target, RESOLVED, policy.decide(target, RESOLVED, mode))


def containers(*images: str, **security: Any) -> dict[str, Any]:
    return {"containers": [{"name": f"c{i}", "image": image, **security} for i, image in enumerate(images)]}


def test_findings_carry_the_facts_and_the_numeric_dockerfile_line():
    named, root, numeric, ghost, down = decided(containers("named", "root", "numeric", "ghost", "down"))
    assert (named.outcome, named.user, named.uid, named.gid, named.fix) == ("patch", "node", 1000, 1001,
                                                                          "USER 1000:1001")
    assert named.digest == RESOLVED["named"].digest
    assert (root.outcome, root.detail, root.fix) == ("root", "no USER", findings.EXAMPLE_FIX)
    assert (numeric.outcome, numeric.fix) == ("skip", None)
    assert ghost.outcome == "unresolvable" and "not found" in ghost.detail
    assert down.outcome == "unavailable" and down.detail == "registry unreachable"


def test_set_run_as_user_is_reported_not_looked_up():
    (zero,) = decided(containers("named", securityContext={"runAsUser": 0}))
    assert (zero.outcome, zero.detail, zero.run_as_user) == ("root", "runAsUser: 0", 0)
    (set_,) = decided(containers("root", securityContext={"runAsUser": 5}))
    assert (set_.outcome, set_.user, set_.run_as_user) == ("skip", None, 5)


def test_warning_lines_say_what_happens_and_fit_120_characters():
    long_image = "registry.internal.example:5000/" + "team/" * 12 + "app:1.2.3"
    spec = {"containers": [{"name": "app", "image": "named"}, {"name": "side", "image": "root"},
                           {"name": "long", "image": long_image}]}
    resolved = {**RESOLVED, long_image: RESOLVED["root"]}
    target = workloads.of(manifest("Deployment", spec)).target
    assert target is not None
    for mode in Mode:
        found = findings.collect(target, resolved, policy.decide(target, resolved, mode))
        lines = feedback.warnings("deployment/web", found, mode)
        assert len(lines) == 3 and all(len(line) <= MAX_WARNING_CHARS for line in lines), lines
    found = findings.collect(target, resolved, policy.decide(target, resolved, Mode.ENFORCE))
    app, side, long_ = feedback.warnings("deployment/web", found, Mode.ENFORCE)
    assert app == ('deployment/web: container "app" will run as uid 1000: named (USER node); '
                   "Dockerfile: USER 1000:1001")
    assert side.startswith('deployment/web: container "side" would be refused: runs as root: root (no USER)')
    assert side.endswith("Dockerfile: USER 1000:1000")
    assert ": app:1.2.3 (no USER)" in long_  # shortened to what a developer recognises
    warn = feedback.warnings("deployment/web", found[1:2], Mode.WARN)
    assert warn[0].startswith('deployment/web: container "side" will run as root')


def test_fine_containers_get_no_warning():
    assert feedback.warnings("job/x", decided(containers("numeric")), Mode.ENFORCE) == []


def test_audit_annotations_name_every_container_and_stay_bounded():
    found = decided(containers("named", "root"))
    notes = evidence.audit_annotations(found, mode="enforce", result="refused")
    assert notes["mode"] == "enforce" and notes["decision"] == "refused"
    entries = json.loads(notes["containers"])
    assert entries[0] == {"name": "c0", "outcome": "patch", "image": "named", "user": "node",
                          "uid": 1000, "gid": 1001, "digest": RESOLVED["named"].digest}
    assert entries[1]["outcome"] == "root" and entries[1]["detail"] == "no USER"
    many = decided(containers(*["named"] * 200))
    bounded = evidence.audit_annotations(many, mode="warn", result="patched")["containers"]
    assert len(bounded) <= evidence.MAX_AUDIT_VALUE_CHARS
    tail = json.loads(bounded)
    assert "digest" not in tail[0] and tail[-1]["omitted"] == 200 - (len(tail) - 1)


def test_run_as_annotation_is_added_without_annotations_and_merged_on_reinvocation():
    obj = manifest("Pod", containers("named"))
    (named,) = decided(containers("named"))
    ops = evidence.annotation_ops(obj["metadata"], [named])
    assert ops[0]["path"] == "/metadata/annotations"
    pod = jsonpatch.apply_patch(obj, ops)
    recorded = evidence.read_run_as(pod["metadata"])
    assert recorded == {"c0": {"image": "named", "digest": RESOLVED["named"].digest, "user": "node",
                               "uid": 1000, "gid": 1001}}
    # a sidecar patched on re-invocation is added; the earlier record stays
    sidecar = findings.Finding(**{**{s: getattr(named, s) for s in named.__slots__},
                                  "container": named.container.__class__(
                                      "containers", "mesh", "named", "/spec/containers/1", None)})
    again = jsonpatch.apply_patch(pod, evidence.annotation_ops(pod["metadata"], [sidecar]))
    assert set(evidence.read_run_as(again["metadata"])) == {"c0", "mesh"}
    assert evidence.annotation_ops(again["metadata"], []) == []
    path = evidence.annotation_ops(again["metadata"], [sidecar])[0]["path"]
    assert path == "/metadata/annotations/nonroot-mutator.dev~1run-as"


def test_an_image_cannot_bloat_the_evidence():
    huge = "u" * 100_000
    resolved = {"big": ImageUser("big", "r/big:1", "sha256:" + "f" * 64, huge, 1000, 1000)}
    spec = {"containers": [{"name": f"c{i}", "image": "big"} for i in range(400)]}
    target = workloads.of(manifest("Pod", spec)).target
    assert target is not None
    found = findings.collect(target, resolved, policy.decide(target, resolved, Mode.ENFORCE))
    (op,) = evidence.annotation_ops({}, found)
    value = op["value"][evidence.ANNOTATION]
    assert len(value) <= evidence.MAX_ANNOTATION_CHARS
    assert json.loads(value)["c399"] == {"uid": 1000, "gid": 1000}
    one = evidence.annotation_ops({}, found[:1])[0]["value"][evidence.ANNOTATION]
    assert json.loads(one)["c0"]["user"] == huge[: evidence.MAX_FIELD_CHARS]
    notes = evidence.audit_annotations(found, mode="enforce", result="patched")
    assert len(notes["containers"]) <= evidence.MAX_AUDIT_VALUE_CHARS
