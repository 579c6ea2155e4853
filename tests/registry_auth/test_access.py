"""Tenant isolation of the shared image cache, against the protected loopback registries.

Namespaces get their credentials through the ``PodKeyrings`` seam (here: a fixed keyring per
namespace; the e2e tier reads real Secrets). Every request the resolver sends is counted, so
"a public image costs nothing" and "one HEAD per (credentials, repository)" are measured, not assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mutator import metrics
from mutator.commands import report
from mutator.config import from_mapping
from mutator.decide import admission
from mutator.decide.images import ImageFailure, ImageUser
from mutator.decide.policy import Mode
from mutator.resolve.registry.authn.credentials import CredentialSources, PullContext
from mutator.resolve.registry.authn.keyring import Keyring
from mutator.serve import pipeline
from tests.registry_auth.conftest import ALICE_PASSWORD, ALICE_REFRESH, BOB_PASSWORD
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.fixtures import review, with_images
from tests.support.images import layer, passwd

pytestmark = pytest.mark.registry


class NamespaceKeyrings:
    """The PodKeyrings seam with one fixed keyring per namespace."""

    def __init__(self, keyrings: dict[str, Keyring]) -> None:
        self._keyrings = keyrings

    async def keyring(self, pod: PullContext) -> Keyring | None:
        return self._keyrings.get(pod.namespace)


def _keyring(host: str, user: str, password: str, source: str) -> Keyring:
    return Keyring.from_docker_config({"auths": {host: {"username": user, "password": password}}},
                                      source=source)


def _sources(host: str) -> CredentialSources:
    return CredentialSources(pods=NamespaceKeyrings({
        "team-a": _keyring(host, "alice", ALICE_PASSWORD, "secret team-a/regcred"),
        # the same credentials in another Secret of another namespace: the same fingerprint
        "team-c": _keyring(host, "alice", ALICE_PASSWORD, "secret team-c/copied"),
        "team-d": _keyring(host, "bob", BOB_PASSWORD, "secret team-d/bob"),
        # alice again, as an identity token: other credentials that may read the image
        "team-e": Keyring.from_docker_config({"auths": {host: {"identitytoken": ALICE_REFRESH}}},
                                             source="secret team-e/oauth"),
    }))


async def _resolve(resolver, image: str, namespace: str):
    deadline = asyncio.get_running_loop().time() + 10
    return (await resolver.resolve([image], deadline=deadline, pull=PullContext(namespace)))[image]


def _access(result: str) -> float:
    return metrics.CACHE_LOOKUPS.labels("access", result)._value.get()


async def test_private_answer_is_not_given_to_a_namespace_without_credentials(
        token_registry, resolver_for, sent):
    resolver = resolver_for(token_registry.config, _sources(token_registry.server.host))
    image = token_registry.private
    mine = await _resolve(resolver, image, "team-a")
    assert isinstance(mine, ImageUser) and mine.uid == 1202, mine

    sent.clear()
    misses = _access("miss")
    started = time.perf_counter()
    theirs = await _resolve(resolver, image, "team-b")
    cold_ms = (time.perf_counter() - started) * 1000
    assert isinstance(theirs, ImageFailure) and not theirs.temporary
    assert "requires authentication" in theirs.message and "no credentials match" in theirs.message
    # one access check: a manifest HEAD with the token it needs (retried once with a fresh token
    # when refused, as every request is), never the image again
    assert {s.method for s in sent if "/manifests/" in s.url} == {"HEAD"}
    assert not any("/blobs/" in s.url for s in sent)
    assert _access("miss") == misses + 1
    round_trips = len(sent)

    sent.clear()
    started = time.perf_counter()
    again = await _resolve(resolver, image, "team-b")
    warm_ms = (time.perf_counter() - started) * 1000
    assert isinstance(again, ImageFailure) and sent == []  # the refusal is cached per (credentials, repo)
    print(f"\naccess check, token registry: {round_trips} round trips, {cold_ms:.1f} ms cold; "
          f"{warm_ms:.2f} ms cached")


async def test_same_credentials_elsewhere_are_free_and_other_credentials_are_checked(
        token_registry, resolver_for, sent):
    resolver = resolver_for(token_registry.config, _sources(token_registry.server.host))
    image = token_registry.private
    assert isinstance(await _resolve(resolver, image, "team-a"), ImageUser)

    sent.clear()
    copied = await _resolve(resolver, image, "team-c")
    assert isinstance(copied, ImageUser) and copied.uid == 1202 and sent == []

    bob = await _resolve(resolver, image, "team-d")
    assert isinstance(bob, ImageFailure) and "refused every matching credential" in bob.message
    assert BOB_PASSWORD not in bob.message
    assert {s.method for s in sent if "/manifests/" in s.url} == {"HEAD"}
    assert not any("/blobs/" in s.url for s in sent)

    sent.clear()
    started = time.perf_counter()
    oauth = await _resolve(resolver, image, "team-e")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert isinstance(oauth, ImageUser) and oauth.uid == 1202, oauth
    assert [s.method for s in sent] == ["POST", "HEAD"]  # the token, then the check: two round trips
    print(f"\naccess check granted, token registry: {len(sent)} round trips, {elapsed_ms:.1f} ms")


async def test_a_public_image_costs_no_access_check(token_registry, resolver_for, sent):
    resolver = resolver_for(token_registry.config, _sources(token_registry.server.host))
    first = await _resolve(resolver, token_registry.public, "team-b")  # anonymous: proves it is public
    assert isinstance(first, ImageUser) and first.uid == 1201

    sent.clear()
    checks = _access("miss") + _access("hit") + _access("coalesced")
    for namespace in ("team-a", "team-d", "team-e"):
        found = await _resolve(resolver, token_registry.public, namespace)
        assert isinstance(found, ImageUser) and found.uid == 1201
    assert sent == []
    assert _access("miss") + _access("hit") + _access("coalesced") == checks


async def test_only_answers_from_a_public_repository_are_reusable_by_every_pod(token_registry, resolver_for):
    """What the decisions memo may reuse without asking again: a private image's answer is checked
    per Pod (its credentials), a public one is given to all."""
    resolver = resolver_for(token_registry.config, _sources(token_registry.server.host))
    public = await _resolve(resolver, token_registry.public, "team-b")
    private = await _resolve(resolver, token_registry.private, "team-a")
    assert isinstance(public, ImageUser) and isinstance(private, ImageUser)
    assert resolver.reusable([public]) and not resolver.reusable([private])
    assert not resolver.reusable([public, private])
    failure = await _resolve(resolver, token_registry.private, "team-d")
    assert isinstance(failure, ImageFailure) and not resolver.reusable([failure])
    epoch = resolver.epoch
    resolver.clear()
    assert resolver.epoch == epoch + 1  # the memo stops trusting what it kept at once


async def test_concurrent_checks_of_one_repository_make_one_request(basic_registry, resolver_for, sent):
    resolver = resolver_for(basic_registry.config, _sources(basic_registry.server.host))
    image = basic_registry.private
    assert isinstance(await _resolve(resolver, image, "team-a"), ImageUser)

    sent.clear()
    coalesced = _access("coalesced")
    started = time.perf_counter()
    answers = await asyncio.gather(*(_resolve(resolver, image, "team-b") for _ in range(20)))
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert all(isinstance(a, ImageFailure) and "requires authentication" in a.message for a in answers)
    assert [s.method for s in sent] == ["HEAD"]  # Basic: the challenge is known, one round trip
    assert _access("coalesced") == coalesced + 19
    print(f"\naccess check, htpasswd registry: 1 round trip, 20 Pods answered in {elapsed_ms:.1f} ms")



@contextlib.contextmanager
def _proxied(registry, pusher, resolver_for, repository: str,
             uid: int) -> Iterator[tuple[FaultProxy, Any, str]]:
    """An image of *repository* (user app = *uid*) read through a fault proxy, with a cold resolver."""
    image = pusher.image(repository, "v1", user="app",
                         layers=[layer({"etc/passwd": passwd(("app", uid, uid))})]).reference
    proxy = FaultProxy(registry.url).start()
    try:
        config = from_mapping({"registries": {proxy.host: {"plain_http": True}}})
        yield proxy, resolver_for(config, _sources(proxy.host)), image.replace(registry.host, proxy.host)
    finally:
        proxy.stop()


async def test_a_check_the_registry_cannot_answer_is_temporary_and_not_kept(registry, pusher, resolver_for):
    """The registry fails the check (503): the Pod gets a temporary failure, nothing is cached, and the
    next check, answered, lets it in; an anonymous success marks the repository public for good."""
    with _proxied(registry, pusher, resolver_for, "access/flaky", 1501) as (proxy, resolver, image):
        # read with team-a's credentials on offer: on record for them, not (yet) as public
        assert isinstance(await _resolve(resolver, image, "team-a"), ImageUser)

        proxy.set_fault(Fault("status", status=503, method="HEAD", match="/manifests/"))
        down = await _resolve(resolver, image, "team-b")
        assert isinstance(down, ImageFailure) and down.temporary and "503" in down.message, down

        proxy.recover()
        up = await _resolve(resolver, image, "team-b")
        assert isinstance(up, ImageUser) and up.uid == 1501, up
        heads = len(proxy.seen(lambda s: s.method == "HEAD"))
        assert isinstance(await _resolve(resolver, image, "team-d"), ImageUser)  # public now: no check
        assert len(proxy.seen(lambda s: s.method == "HEAD")) == heads


async def test_a_deadline_hit_during_the_access_check_is_counted_as_one(registry, pusher, resolver_for):
    """The image is cached, but this Pod's access check is still waiting on the registry when the
    admission must answer: a temporary refusal that says why, counted as an expired deadline."""
    with _proxied(registry, pusher, resolver_for, "access/late", 1502) as (proxy, resolver, image):
        assert isinstance(await _resolve(resolver, image, "team-a"), ImageUser)  # cached, not public

        proxy.set_fault(Fault("slow", seconds=3, method="HEAD", match="/manifests/"))
        document = with_images(review("pod-create-kubectl-run"), {"docker.io/library/memcached:1.6": image})
        document["request"]["namespace"] = "team-b"
        expired = metrics.DEADLINE_EXPIRED.labels("enforce")._value.get()
        deadline = asyncio.get_running_loop().time() + 0.5
        outcome = await pipeline.handle(admission.validate(document), mode=Mode.ENFORCE, resolver=resolver,
                                       deadline=deadline)
        assert outcome.result == "refused"
        assert "checking this Pod's access" in (outcome.decision.message if outcome.decision else "")
        assert metrics.DEADLINE_EXPIRED.labels("enforce")._value.get() == expired + 1


async def test_the_report_reads_a_private_image_for_every_namespace_that_may_whatever_the_order(
        token_registry, resolver_for, sent):
    """``mutator report`` resolves every (image, pull context) at once. The resolver shares a lookup in
    flight whoever's credentials it carries, so the namespaces without credentials listed first must not
    hand their refusal to those that have some; and those with the same credentials cost nothing more."""
    sources = _sources(token_registry.server.host)
    resolver = resolver_for(token_registry.config, sources)
    image = token_registry.private
    order = ["team-b", "team-d", "team-a", "team-c", "team-z"]  # none, bob, alice, alice again, none
    lookups = [(image, PullContext(namespace)) for namespace in order]
    found = await report._resolve(resolver, lookups, lookup_seconds=10, progress=None)
    readable = {pull.namespace for (_, pull), result in found.items() if isinstance(result, ImageUser)}
    assert readable == {"team-a", "team-c"}, found
    assert found[(image, PullContext("team-c"))].uid == 1202
    for namespace in ("team-b", "team-d", "team-z"):
        failure = found[(image, PullContext(namespace))]
        assert isinstance(failure, ImageFailure) and not failure.temporary, failure
    # the image was read once: team-c, with alice's credentials too, was answered from the cache
    blobs = [s.url for s in sent if "/blobs/" in s.url and s.status == 200]
    assert blobs and len(blobs) == len(set(blobs)), blobs
