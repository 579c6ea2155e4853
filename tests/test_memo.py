"""The decisions memo: a repeated Pod is answered as a fresh decision would answer it, and only then.

Pure logic, with a resolver that answers from a table: what is pinned here is
that the memo never changes an answer (same response, same patch, same
findings, for every kind of Pod), that it is used for the replicas of a
rollout, that anything the decision rests on (the resolver's answer, the mode,
the namespace, our annotation, the spec) separates its entries, and that
whatever the full path would refuse or treat differently is never taken from it.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from mutator.decide import admission, policy
from mutator.decide.evidence import ANNOTATION
from mutator.decide.images import ImageFailure, ImageUser, Resolution
from mutator.decide.policy import Mode
from mutator.errors import BadReview
from mutator.serve import memo, pipeline
from mutator.serve.memo import Memo
from tests.support.fixtures import ADMISSION, review

NAMED = ImageUser("img/named:1", "img/named:1", "sha256:" + "1" * 64, "app", uid=1000, gid=1000)
ROOT = ImageUser("img/root:1", "img/root:1", "sha256:" + "2" * 64, "", uid=0, gid=0)
GHOST = ImageUser("img/ghost:1", "img/ghost:1", "sha256:" + "3" * 64, "ghost", uid=None, gid=None,
                  problem="user 'ghost' not found")


class Table:
    """Answers each image from a table, the same object every time, as a warm cache does."""

    def __init__(self, answers: dict[str, Resolution], *, public: bool = False) -> None:
        self.answers = answers
        self.calls = 0
        self.public = public  # False: as for private images, every replica's answers are checked
        self.epoch = 0

    def reusable(self, answers: Any) -> bool:
        return self.public

    async def resolve(self, images: Any, *, deadline: float, pull: Any = None) -> dict[str, Resolution]:
        self.calls += 1
        return {image: self.answers.get(image) or ImageFailure(image, "unknown", temporary=True)
                for image in images}


TABLE = {"img/named:1": NAMED, "img/root:1": ROOT, "img/ghost:1": GHOST}


def body_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def pod(*, uid: str = "u-1", image: str = "img/named:1", mode_namespace: str = "ns") -> dict[str, Any]:
    document = review("pod-create-from-deployment")
    document["request"]["uid"] = uid
    document["request"]["namespace"] = mode_namespace
    document["request"]["object"]["spec"]["containers"][0]["image"] = image
    return document


async def answer(body: bytes, *, mode: Mode, resolver: Any, store: Memo | None) -> pipeline.Outcome:
    """What ``/mutate/{mode}`` does with a body: the memo first, else the full path."""
    return await pipeline.admit(body, mode=mode, resolver=resolver, api_timeout=5, memo=store)


def without_uid(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    document["response"].pop("uid")
    return document


async def test_the_replicas_of_a_rollout_are_decided_once_and_answered_alike(monkeypatch):
    decided = 0
    decide = policy.decide

    def counting(*args: Any, **kwargs: Any) -> policy.Decision:
        nonlocal decided
        decided += 1
        return decide(*args, **kwargs)

    monkeypatch.setattr(policy, "decide", counting)
    store, resolver = Memo(), Table(TABLE)
    outcomes = [await answer(body_of(pod(uid=f"replica-{i}")), mode=Mode.ENFORCE, resolver=resolver,
                             store=store) for i in range(5)]
    assert decided == 1 and len(store) == 1
    assert resolver.calls == 5  # every replica still asks the resolver: its answer is what is trusted
    assert [o.response["response"]["uid"] for o in outcomes] == [f"replica-{i}" for i in range(5)]
    first = without_uid(outcomes[0].response)
    assert all(without_uid(o.response) == first for o in outcomes[1:])
    assert admission.patch_of(outcomes[4].response) == admission.patch_of(outcomes[0].response)
    assert outcomes[4].found == outcomes[0].found and outcomes[4].result == "patched"


class Clock:
    """The memo's clock, moved by the test: trust is timed without waiting."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decision_hits() -> float:
    return REGISTRY.get_sample_value("nonroot_mutator_cache_lookups_total",
                                     {"cache": "decision", "result": "hit"}) or 0.0


async def test_replicas_of_public_images_are_answered_without_the_resolver_for_a_while():
    clock = Clock()
    store, resolver = Memo(clock=clock), Table(TABLE, public=True)
    first = await answer(body_of(pod(uid="r-0")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    hits = decision_hits()
    clock.now += memo.CONFIRM_SECONDS / 2
    replicas = [await answer(body_of(pod(uid=f"r-{i}")), mode=Mode.ENFORCE, resolver=resolver, store=store)
                for i in range(1, 4)]
    assert resolver.calls == 1 and decision_hits() == hits + 3
    assert all(without_uid(r.response) == without_uid(first.response) for r in replicas)
    assert [r.review.uid for r in replicas] == ["r-1", "r-2", "r-3"] and replicas[0].result == "patched"

    clock.now += memo.CONFIRM_SECONDS  # past the trust: the resolver is asked, and confirms
    await answer(body_of(pod(uid="r-4")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert resolver.calls == 2
    clock.now += memo.CONFIRM_SECONDS / 2  # trusted anew from the confirmation
    await answer(body_of(pod(uid="r-5")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert resolver.calls == 2


async def test_a_public_answer_past_its_trust_that_changed_is_decided_again():
    clock = Clock()
    store, resolver = Memo(clock=clock), Table(dict(TABLE), public=True)
    await answer(body_of(pod(uid="a")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    resolver.answers["img/named:1"] = ImageUser("img/named:1", "img/named:1", "sha256:" + "4" * 64, "app",
                                                4000, 4000)
    trusted = await answer(body_of(pod(uid="b")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert admission.patch_of(trusted.response)[0]["value"]["runAsUser"] == 1000  # within the trust
    clock.now += memo.CONFIRM_SECONDS
    again = await answer(body_of(pod(uid="c")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert admission.patch_of(again.response)[0]["value"]["runAsUser"] == 4000


async def test_a_new_resolver_epoch_ends_the_trust_at_once():
    store, resolver = Memo(clock=Clock()), Table(TABLE, public=True)
    await answer(body_of(pod(uid="a")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    await answer(body_of(pod(uid="b")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert resolver.calls == 1
    resolver.epoch += 1  # what Resolver.clear() does
    await answer(body_of(pod(uid="c")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert resolver.calls == 2


async def test_a_different_answer_from_the_resolver_is_decided_again():
    store, resolver = Memo(), Table(dict(TABLE))
    await answer(body_of(pod(uid="a")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    # the tag was re-read after its TTL and now points at another image: a new object
    resolver.answers["img/named:1"] = ImageUser("img/named:1", "img/named:1", "sha256:" + "4" * 64, "app",
                                                uid=2000, gid=2000)
    outcome = await answer(body_of(pod(uid="b")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    ops = {op["path"]: op["value"] for op in admission.patch_of(outcome.response)}
    assert ops["/spec/containers/0/securityContext"]["runAsUser"] == 2000
    # an answer equal in value but not the same object is not trusted either
    resolver.answers["img/named:1"] = copy.copy(resolver.answers["img/named:1"])
    again = await answer(body_of(pod(uid="c")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert again.found[0].uid == 2000 and again.found[0] is not outcome.found[0]


async def test_failures_are_never_kept():
    store, resolver = Memo(), Table({})  # every image: a temporary failure
    outcome = await answer(body_of(pod(image="img/down:1")), mode=Mode.ENFORCE, resolver=resolver,
                           store=store)
    assert outcome.result == "refused" and len(store) == 0


async def test_a_refusal_is_kept_and_carries_no_patch():
    store, resolver = Memo(), Table(TABLE)
    for uid in ("r-1", "r-2"):
        outcome = await answer(body_of(pod(uid=uid, image="img/root:1")), mode=Mode.ENFORCE,
                               resolver=resolver, store=store)
        assert outcome.result == "refused"
        assert "patch" not in outcome.response["response"]
        assert outcome.response["response"]["status"]["code"] == 403
    assert len(store) == 1


@pytest.mark.parametrize("change", [
    lambda d: d["request"].update(namespace="other"),
    lambda d: d["request"]["object"]["metadata"].update(generateName="other-"),
    lambda d: d["request"]["object"]["metadata"].setdefault("annotations", {}).update(
        {ANNOTATION: '{"app":{"uid":7}}'}),
    lambda d: d["request"]["object"]["spec"]["containers"][0].update(image="img/ghost:1"),
    lambda d: d["request"]["object"]["spec"].update(securityContext={"runAsUser": 4242}),
    lambda d: d["request"]["object"]["spec"].update(imagePullSecrets=[{"name": "regcred"}]),
    lambda d: d["request"]["object"].pop("metadata"),
], ids=["namespace", "name", "our-annotation", "image", "pod-security-context", "pull-secrets",
        "no-metadata"])
def test_what_the_decision_reads_separates_entries(change):
    document = pod()
    changed = copy.deepcopy(document)
    change(changed)
    before = memo.envelope(body_of(document), Mode.ENFORCE)
    after = memo.envelope(body_of(changed), Mode.ENFORCE)
    assert before is not None and after is not None and before.key != after.key
    assert memo.envelope(body_of(document), Mode.WARN).key != before.key  # type: ignore[union-attr]


def test_what_every_request_has_of_its_own_shares_an_entry():
    document = pod(uid="one")
    other = pod(uid="two")
    other["request"]["dryRun"] = True
    first = memo.envelope(body_of(document), Mode.ENFORCE)
    second = memo.envelope(body_of(other), Mode.ENFORCE)
    assert first is not None and second is not None and first.key == second.key
    assert (first.uid, second.uid, second.dry_run) == ("one", "two", True)


@pytest.mark.parametrize("change", [
    lambda d: d["request"].update(operation="UPDATE"),
    lambda d: d["request"].update(subResource="ephemeralcontainers"),
    lambda d: d["request"].update(oldObject={"spec": {}}),
    lambda d: d["request"].update(oldObject=5),
    lambda d: d["request"].update(uid=""),
    lambda d: d["request"].update(dryRun="yes"),
    lambda d: d["request"]["kind"].update(kind="Deployment"),
    lambda d: d["request"]["resource"].update(resource="deployments"),
    lambda d: d["request"]["resource"].update(group="apps"),
    lambda d: d.update(apiVersion="admission.k8s.io/v1beta1"),
    lambda d: d.update(kind="Review"),
    lambda d: d["request"].update(object=None),
    lambda d: d["request"]["object"].pop("spec"),
    lambda d: d["request"]["object"].update(metadata=[1]),
    lambda d: d["request"].update(namespace=7),
], ids=["update", "subresource", "old-object", "old-object-not-an-object", "no-uid", "dry-run-not-bool",
        "kind", "resource", "group", "api-version", "review-kind", "no-object", "no-spec", "metadata-list",
        "namespace-number"])
def test_whatever_the_full_path_treats_otherwise_is_not_kept(change):
    document = pod()
    change(document)
    assert memo.envelope(body_of(document), Mode.ENFORCE) is None


@pytest.mark.parametrize("junk", [b"", b"{", b"[]", b"null", b'{"request": 1}',
                                  b"[" * 100_000 + b"]" * 100_000])
def test_a_body_that_is_not_a_review_is_left_to_the_full_path(junk):
    assert memo.envelope(junk, Mode.ENFORCE) is None


@pytest.mark.parametrize("path", sorted(ADMISSION.glob("*.json")), ids=lambda p: p.stem)
async def test_a_replica_is_logged_as_the_full_decode_reads_it(path):
    """On every review a real API server sent: a replica answered from the memo carries the same
    uid, names and flags as decoding it in full gives, or the review is not kept at all."""
    body = path.read_bytes()
    seen = memo.envelope(body, Mode.ENFORCE)
    full = admission.decode(body)
    if seen is None:
        assert (full.operation, full.sub_resource) != ("CREATE", "")
        return
    assert (seen.uid, seen.dry_run) == (full.uid, full.dry_run)
    document = json.loads(body)
    first = body_of(document)  # the replica differs from it in its uid alone, byte for byte
    document["request"]["uid"] = "replica"
    replica = body_of(document)
    target = admission.target(full)
    images = policy.images_to_resolve(target) if target is not None else []
    named = {image: ImageUser(image, image, "sha256:" + "5" * 64, "app", 1000, 1000) for image in images}
    store, resolver = Memo(), Table(named, public=True)
    await answer(first, mode=Mode.ENFORCE, resolver=resolver, store=store)
    calls = resolver.calls
    outcome = await answer(replica, mode=Mode.ENFORCE, resolver=resolver, store=store)
    shown = admission.decode(replica)
    assert len(store) == 1 and resolver.calls == calls  # kept, and the replica answered from the memo
    assert (outcome.review.uid, outcome.review.namespace, outcome.review.name, outcome.review.dry_run,
            outcome.review.operation, outcome.review.kind) == (
        shown.uid, shown.namespace, shown.name, shown.dry_run, shown.operation, shown.kind)


CONTAINER = st.fixed_dictionaries(
    {"image": st.sampled_from(["img/named:1", "img/root:1", "img/ghost:1", "img/down:1"])},
    optional={"securityContext": st.fixed_dictionaries({}, optional={
        "runAsUser": st.sampled_from([0, 1000, 2147483647]),
        "runAsGroup": st.sampled_from([0, 3000]),
        "runAsNonRoot": st.booleans()})},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(containers=st.lists(CONTAINER, min_size=1, max_size=3),
       inits=st.lists(CONTAINER, max_size=2),
       pod_sc=st.sampled_from([None, {}, {"runAsUser": 1234}, {"runAsNonRoot": True}, {"runAsGroup": 5}]),
       annotations=st.sampled_from([None, {}, {"team": "a"}, {ANNOTATION: '{"app":{"uid":1000,"gid":1000}}'},
                                    {ANNOTATION: "not json"}]),
       mode=st.sampled_from(list(Mode)))
def test_an_answer_from_the_memo_is_the_answer_a_fresh_decision_gives(containers, inits, pod_sc, annotations,
                                                                      mode):
    document = review("pod-create-from-deployment")
    spec = document["request"]["object"]["spec"]
    spec["containers"] = [dict(c, name=f"c{i}") for i, c in enumerate(containers)]
    spec["initContainers"] = [dict(c, name=f"i{i}") for i, c in enumerate(inits)]
    spec.pop("securityContext", None)
    if pod_sc is not None:
        spec["securityContext"] = pod_sc
    metadata = document["request"]["object"]["metadata"]
    metadata.pop("annotations", None)
    if annotations is not None:
        metadata["annotations"] = annotations

    async def run() -> None:
        store, resolver = Memo(), Table(TABLE)
        fresh = await answer(body_of(document), mode=mode, resolver=resolver, store=None)
        first = await answer(body_of(document), mode=mode, resolver=resolver, store=store)
        document["request"]["uid"] = "second"
        second = await answer(body_of(document), mode=mode, resolver=resolver, store=store)
        assert first.response == fresh.response
        assert second.response["response"]["uid"] == "second"
        assert without_uid(second.response) == without_uid(fresh.response)
        assert (second.result, second.found) == (fresh.result, fresh.found)
        # the memo's answer is the bytes a fresh decision's answer encodes to, the uid in its place
        assert second.body == orjson.dumps({**fresh.response, "response": {
            **fresh.response["response"], "uid": "second"}})

    asyncio.run(run())


async def test_the_memo_is_bounded_and_keeps_the_most_recently_used():
    store, resolver = Memo(maxsize=2), Table(TABLE)
    keys = []
    for name in ("a", "b", "c"):
        document = pod(uid=name)
        document["request"]["object"]["metadata"]["generateName"] = f"{name}-"
        keys.append(memo.envelope(body_of(document), Mode.ENFORCE))
        await answer(body_of(document), mode=Mode.ENFORCE, resolver=resolver, store=store)
        if name == "b":
            assert store.get(keys[0].key) is not None  # a is used again: b is now the oldest
    assert len(store) == 2
    assert store.get(keys[0].key) is not None and store.get(keys[2].key) is not None
    assert store.get(keys[1].key) is None


class Scans:
    """Counts the scans (:func:`memo.envelope`) the memo makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        scan = memo.envelope

        def counting(body: bytes, mode: Mode) -> memo.Seen | None:
            self.count += 1
            return scan(body, mode)

        monkeypatch.setattr(memo, "envelope", counting)


async def test_a_replica_alike_but_for_its_uid_is_recognised_without_a_scan(monkeypatch):
    scans, store, resolver = Scans(monkeypatch), Memo(), Table(TABLE)
    outcomes = [await answer(body_of(pod(uid=f"replica-{i}")), mode=Mode.ENFORCE, resolver=resolver,
                             store=store) for i in range(4)]
    assert scans.count == 1
    assert [o.response["response"]["uid"] for o in outcomes] == [f"replica-{i}" for i in range(4)]
    assert [o.review.uid for o in outcomes] == [f"replica-{i}" for i in range(4)]
    assert all(without_uid(o.response) == without_uid(outcomes[0].response) for o in outcomes)


@pytest.mark.parametrize("change", [
    lambda d: d["request"].update(namespace="other"),
    lambda d: d["request"].update(dryRun=True),
    lambda d: d["request"]["userInfo"].update(username="someone-else"),
    lambda d: d["request"]["object"]["spec"]["containers"][0].update(image="img/root:1"),
], ids=["namespace", "dry-run", "user", "image"])
async def test_a_body_that_differs_in_more_than_its_uid_is_scanned(monkeypatch, change):
    scans, store, resolver = Scans(monkeypatch), Memo(), Table(TABLE)
    await answer(body_of(pod(uid="first")), mode=Mode.ENFORCE, resolver=resolver, store=store)
    document = pod(uid="second")
    change(document)
    outcome = await answer(body_of(document), mode=Mode.ENFORCE, resolver=resolver, store=store)
    fresh = await answer(body_of(document), mode=Mode.ENFORCE, resolver=resolver, store=None)
    assert scans.count == 2
    assert outcome.response == fresh.response and outcome.review.dry_run == fresh.review.dry_run
    await answer(body_of(pod(uid="third")), mode=Mode.WARN, resolver=resolver, store=store)
    assert scans.count == 3  # the mode is part of what is recognised


async def test_a_uid_its_bytes_do_not_spell_is_never_taken_from_them(monkeypatch):
    scans, store, resolver = Scans(monkeypatch), Memo(), Table(TABLE)
    first = body_of(pod(uid="aaaa"))
    await answer(first, mode=Mode.ENFORCE, resolver=resolver, store=store)
    escaped = body_of(pod(uid="aé\"a"))  # json.dumps escapes both: read by the scan, as JSON
    outcome = await answer(escaped, mode=Mode.ENFORCE, resolver=resolver, store=store)
    assert outcome.review.uid == "aé\"a" and outcome.response["response"]["uid"] == "aé\"a"
    assert scans.count == 2
    # bytes that are not a JSON string where the uid stands: refused as the full path refuses them
    for uid in (b"a\x01aa", b"a\xffaa"):
        body = first.replace(b'"aaaa"', b'"' + uid + b'"')
        with pytest.raises(BadReview) as fresh:
            await answer(body, mode=Mode.ENFORCE, resolver=resolver, store=None)
        with pytest.raises(BadReview) as remembered:
            await answer(body, mode=Mode.ENFORCE, resolver=resolver, store=store)
        assert str(remembered.value) == str(fresh.value) != pipeline.UNREADABLE


def test_only_the_request_uid_is_taken_from_a_body():
    """A body whose first ``uid`` is not the one the request ends up with (a repeated key, the
    last one wins) is not recognised by its bytes: its replicas are scanned."""
    document = pod(uid="real")
    text = body_of(document).decode()
    start = text.index('"request": {') + len('"request": ')
    decoy = json.dumps({**document["request"], "uid": "decoy"})
    doubled = (text[:start] + decoy + ', "request": ' + text[start:]).encode()
    store = Memo()
    assert store.seen(doubled, Mode.ENFORCE).uid == "real"  # type: ignore[union-attr]
    replica = doubled.replace(b'"decoy"', b'"other"')
    assert store.seen(replica, Mode.ENFORCE).uid == "real"  # type: ignore[union-attr]


@pytest.mark.parametrize("path", sorted(ADMISSION.glob("*.json")), ids=lambda p: p.stem)
def test_a_captured_review_and_its_replica_are_seen_as_their_scan_sees_them(path):
    body = path.read_bytes()
    uid = json.loads(body)["request"]["uid"].encode()
    replica = body.replace(uid, b"replica-" + uid[8:])
    store = Memo()
    for one in (body, replica):
        got, scanned = store.seen(one, Mode.ENFORCE), memo.envelope(one, Mode.ENFORCE)
        assert (got and (got.uid, got.dry_run, got.key)) == (scanned and (scanned.uid, scanned.dry_run,
                                                                           scanned.key))
    recognised = memo.envelope(body, Mode.ENFORCE) is not None
    assert len(store._bodies) == int(recognised)


def test_the_bodies_recognised_are_bounded_by_their_bytes():
    bodies = memo._Bodies(max_bytes=3 * len(body_of(pod())))

    def add(body: bytes) -> None:
        bodies.add(*bodies.split(body, Mode.ENFORCE), memo.envelope(body, Mode.ENFORCE))  # type: ignore[misc, arg-type]

    def get(body: bytes) -> memo.Seen | None:
        return bodies.get(*bodies.split(body, Mode.ENFORCE))  # type: ignore[misc]

    seen = []
    for i in range(5):
        document = pod(uid=f"u{i}")
        document["request"]["namespace"] = f"ns-{i}"
        seen.append(body_of(document))
        add(seen[-1])
        if i == 2:
            assert get(seen[0]) is not None  # used again: u1 is now the oldest
    kept = [get(body) is not None for body in seen]
    assert kept == [True, False, False, True, True] and len(bodies) == 3
    large = pod(uid="large")
    large["request"]["object"]["metadata"]["annotations"] = {"big": "x" * memo.MAX_BODY}
    body = body_of(large)
    add(body)
    assert get(body) is None
    # at the bound exactly, a body is kept
    document = pod(uid="edge")
    document["request"]["object"]["metadata"]["annotations"] = {"pad": ""}
    short = memo.MAX_BODY - len(body_of(document))
    document["request"]["object"]["metadata"]["annotations"] = {"pad": "x" * short}
    body = body_of(document)
    assert len(body) == memo.MAX_BODY
    bodies = memo._Bodies()
    add(body)
    assert get(body) is not None
    document["request"]["object"]["metadata"]["annotations"] = {"pad": "x" * (short + 1)}
    over = body_of(document)  # one byte over, its uid counted
    add(over)
    assert get(over) is None
