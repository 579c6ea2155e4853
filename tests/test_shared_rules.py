"""Rules that several paths rely on, each written once: pinned here through every path that uses them.

A Pod without a name is shown by its ``generateName`` and ``*`` (the decoded
review, a replica the decisions memo answers and a workload's label all say the same); a
container's securityContext setting wins over the Pod's; and the outcomes that
refuse a Pod in enforce mode are the ones a finding calls problems.
"""

from __future__ import annotations

import json
import typing

import pytest

from mutator.decide import admission, findings, policy, workloads
from mutator.decide.images import ImageFailure, ImageUser
from mutator.decide.policy import Mode
from mutator.serve import memo, pipeline
from tests.support.fixtures import review


def _unnamed_pod() -> dict[str, typing.Any]:
    document = review("pod-create-from-deployment")
    document["request"].pop("name", None)
    document["request"]["object"]["metadata"].pop("name", None)
    document["request"]["object"]["metadata"]["generateName"] = "web-7d9f-"
    return document


class _Public:
    """Every image a named user of a public repository: what the memo may reuse."""

    epoch = 0

    async def resolve(self, images: typing.Any, **_: typing.Any) -> dict[str, ImageUser]:
        return {i: ImageUser(i, i, "sha256:" + "6" * 64, "app", 1000, 1000) for i in images}

    def reusable(self, answers: typing.Any) -> bool:
        return True


async def test_a_pod_without_a_name_is_shown_by_its_generate_name_on_every_path():
    document = _unnamed_pod()
    body = json.dumps(document).encode()
    assert admission.decode(body).name == "web-7d9f-*"
    store, resolver = memo.Memo(), _Public()
    for uid in ("first", "replica"):  # decided, then answered from the memo
        document["request"]["uid"] = uid
        outcome = await pipeline.admit(json.dumps(document).encode(), mode=Mode.ENFORCE,
                                       resolver=resolver, api_timeout=5, memo=store)  # type: ignore[arg-type]
        assert outcome.review.name == "web-7d9f-*" and outcome.result == "patched", uid
    assert len(store) == 1
    pod = {**document["request"]["object"], "kind": "Pod"}
    assert workloads.of(pod).label.endswith("/web-7d9f-*"), workloads.of(pod).label


def test_a_named_object_keeps_its_name_and_one_with_neither_has_none():
    assert admission.shown_name("web", "web-") == "web"
    assert admission.shown_name(None, None) == ""
    assert admission.shown_name("", 7) == ""


def _container(security_context: dict[str, typing.Any] | None) -> admission.Container:
    return admission.Container("containers", "app", "img:1", "/spec/containers/0", security_context)


@pytest.mark.parametrize(("own", "pod", "seen"), [
    ({"runAsUser": 5}, {"runAsUser": 7}, 5),
    ({}, {"runAsUser": 7}, 7),
    (None, None, None),
    ({"runAsUser": 0}, {"runAsUser": 7}, 0),  # zero is a setting, not an absence
])
def test_the_containers_setting_wins_over_the_pods(own, pod, seen):
    assert policy.effective(_container(own), pod, "runAsUser") == seen


def test_the_effective_run_as_user_is_what_the_decision_and_the_finding_both_read():
    target = admission.Target(pod_security_context={"runAsUser": 0}, containers=(_container(None),))
    named = ImageUser("img:1", "img:1", "sha256:" + "1" * 64, "app", uid=1000, gid=1000)
    decision = policy.decide(target, {"img:1": named}, Mode.ENFORCE)
    (found,) = findings.collect(target, {"img:1": named}, decision)
    assert not decision.allowed and found.outcome == "root" and found.run_as_user == 0


@pytest.mark.parametrize("outcome", typing.get_args(policy.Outcome))
def test_the_outcomes_that_refuse_are_the_ones_called_problems(outcome):
    answers = {
        "patch": ImageUser("img:1", "img:1", "sha256:" + "1" * 64, "app", uid=1000, gid=1000),
        "skip": ImageUser("img:1", "img:1", "sha256:" + "1" * 64, "1000", uid=1000, gid=1000),
        "root": ImageUser("img:1", "img:1", "sha256:" + "1" * 64, "", uid=0, gid=0),
        "unresolvable": ImageFailure("img:1", "manifest unknown", temporary=False),
        "unavailable": ImageFailure("img:1", "registry down", temporary=True),
    }
    target = admission.Target(pod_security_context=None, containers=(_container(None),))
    decision = policy.decide(target, {"img:1": answers[outcome]}, Mode.ENFORCE)
    (found,) = findings.collect(target, {"img:1": answers[outcome]}, decision)
    assert found.outcome == outcome
    assert found.problem is (outcome in policy.PROBLEMS) is (not decision.allowed)
