"""Concurrent cold lookups of one private image by Pods with different credentials.

The resolver shares a lookup in flight among everyone who asks for the same tag or digest,
made with the credentials of whoever asked first. A success is safe to share (the access gate
screens it per requester), a refusal is not: a Pod whose pull secret opens the image must not be
refused because a Pod without one happened to ask a moment earlier. Each test starts the
requester without credentials first, in the same loop iteration as the others, so the race is
lost every time instead of now and then; requests are counted as the session sent them.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from mutator.config import from_mapping
from mutator.decide.images import ImageFailure, ImageUser
from tests.registry_auth.conftest import Sent
from tests.registry_auth.test_access import _resolve, _sources
from tests.support.faultproxy import Fault
from tests.support.images import layer, passwd

pytestmark = pytest.mark.registry


async def _at_once(resolver, image: str, namespaces: list[str]) -> list:
    """Resolve *image* for each namespace concurrently; the first listed reaches the registry first.

    gather() runs its tasks in order within one loop iteration and each starts its lookup task
    before it waits, so the first namespace's lookup is in flight when the others ask."""
    return await asyncio.gather(*(_resolve(resolver, image, namespace) for namespace in namespaces))


def _reads(sent: list[Sent]) -> Counter[tuple[str, str]]:
    """Registry requests the registry answered (200), by method and path: what was read, how often."""
    return Counter((s.method, "/" + s.url.split("/", 3)[-1])
                   for s in sent if "/v2/" in s.url and s.status == 200)


async def test_a_refusal_met_without_credentials_is_not_handed_to_a_pod_that_has_some(
        token_registry, resolver_for, sent):
    resolver = resolver_for(token_registry.config, _sources(token_registry.server.host))
    image = token_registry.private
    # none, alice, bob, then a herd: alice under two Secrets, alice as an identity token, none again
    order = ["team-b", "team-a", "team-d"] + ["team-a", "team-c"] * 10 + ["team-e", "team-z"]
    found = dict(zip(range(len(order)), await _at_once(resolver, image, order), strict=True))

    for index, namespace in enumerate(order):
        result = found[index]
        if namespace in ("team-a", "team-c", "team-e"):
            assert isinstance(result, ImageUser) and result.uid == 1202, (namespace, result)
        else:
            assert isinstance(result, ImageFailure) and not result.temporary, (namespace, result)
    assert "no credentials match" in found[0].message
    assert "refused every matching credential" in found[2].message
    # alice's 22 Pods read the image once: one HEAD of the tag, one GET of each document
    # the tag is asked once per credentials that open it: alice's password, whichever of her 21 Pods
    # asks, and her identity token; what it points at is read once, whoever reads it
    reads = _reads(sent)
    assert reads.pop(("HEAD", "/v2/private/app/manifests/v1")) == 2, reads
    assert set(reads.values()) == {1} and len(reads) == 3, reads  # the manifest, its config, its layer


async def test_a_herd_with_the_same_credentials_makes_one_request_per_document(
        token_registry, resolver_for, sent):
    resolver = resolver_for(token_registry.config, _sources(token_registry.server.host))
    answers = await _at_once(resolver, token_registry.private, ["team-a", "team-c"] * 25)
    assert {a.uid for a in answers if isinstance(a, ImageUser)} == {1202} and len(answers) == 50
    assert all(isinstance(a, ImageUser) for a in answers), answers
    reads = _reads(sent)
    assert set(reads.values()) == {1} and len(reads) == 4, reads  # the tag, the manifest, two blobs
    # the challenge, the tag with the token it asked for, the manifest by digest: what one Pod costs
    assert [s.method for s in sent if "/manifests/" in s.url] == ["HEAD", "HEAD", "GET"], sent


async def test_a_digest_pinned_image_is_read_for_the_pod_that_may_whoever_asked_first(
        basic_registry, resolver_for, sent):
    """A pinned image skips the tag step: the race is on the image step, shared by digest."""
    sources = _sources(basic_registry.server.host)
    first = await _resolve(resolver_for(basic_registry.config, sources), basic_registry.private, "team-a")
    assert isinstance(first, ImageUser), first
    pinned = f"{basic_registry.private.rsplit(':', 1)[0]}@{first.digest}"

    sent.clear()
    resolver = resolver_for(basic_registry.config, sources)
    nobody, alice, again = await _at_once(resolver, pinned, ["team-b", "team-a", "team-c"])
    assert isinstance(nobody, ImageFailure) and not nobody.temporary, nobody
    assert "requires authentication" in nobody.message
    assert isinstance(alice, ImageUser) and alice.uid == 1302, alice
    assert isinstance(again, ImageUser) and again.uid == 1302, again
    assert set(_reads(sent).values()) == {1}, sent  # alice's two Pods read the image once


@pytest.mark.parametrize(("status", "heads"), [(400, 1), (404, 2)])
async def test_only_a_refusal_is_asked_again_with_other_credentials(
        registry, pusher, fault_proxy, resolver_for, status, heads):
    """What the registry says of the image itself (400) is the same for every requester and stays
    shared; a 404, which a registry also answers to hide a repository, is asked again by the Pod
    with credentials (and once only, however many such Pods wait)."""
    image = pusher.image("race/shared", "v1", user="app",
                         layers=[layer({"etc/passwd": passwd(("app", 1701, 1701))})]).reference
    host = fault_proxy.host
    resolver = resolver_for(from_mapping({"registries": {host: {"plain_http": True}}}), _sources(host))
    fault_proxy.reset()
    fault_proxy.set_fault(Fault("status", status=status, match="/manifests/"))
    try:
        answers = await _at_once(resolver, image.replace(registry.host, host),
                                 ["team-b", "team-a", "team-a", "team-c"])
    finally:
        fault_proxy.recover()
    assert all(isinstance(a, ImageFailure) and not a.temporary for a in answers), answers
    assert f"HTTP {status}" in answers[1].message
    assert len(fault_proxy.seen(lambda s: s.method == "HEAD" and "/manifests/" in s.path)) == heads
