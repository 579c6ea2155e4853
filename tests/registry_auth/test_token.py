"""The distribution token flow against Debian's docker-registry with ``auth: token`` and our token server."""

from __future__ import annotations

import asyncio

import pytest

from mutator import metrics
from mutator.decide.images import ImageFailure, ImageUser
from mutator.resolve.registry.auth import TokenAuthenticator
from mutator.resolve.registry.authn.credentials import CredentialSources, PullContext
from mutator.resolve.registry.authn.keyring import Keyring
from mutator.resolve.registry.transport import Transport
from tests.registry_auth.conftest import ALICE_PASSWORD, ALICE_REFRESH, BOB_PASSWORD, FakePods

pytestmark = pytest.mark.registry


@pytest.fixture(autouse=True)
def _fresh_token_server(token_server):
    token_server.reset()
    yield
    token_server.reset()


def _sources(host: str, **entries: dict[str, str]) -> CredentialSources:
    """A docker config keyring: key (host, or host/path with '__' for '/') -> entry."""
    auths = {key.replace("__", "/").replace("HOST", host): entry for key, entry in entries.items()}
    return CredentialSources(docker_config=Keyring.from_docker_config({"auths": auths}, source="test"))


async def test_a_public_image_behind_an_anonymous_token(token_registry, token_server, resolver_for):
    tokens = metrics.REGISTRY_REQUESTS.labels("token", "2xx")
    counted = tokens._value.get()
    resolver = resolver_for(token_registry.config)
    result = await resolver.lookup(token_registry.public)
    assert isinstance(result, ImageUser) and result.uid == 1201, result
    assert token_server.count(subject="") == 1 and tokens._value.get() == counted + 1
    # the token is cached: another lookup of the same repository asks the realm nothing
    again = await resolver.lookup(token_registry.public)
    assert again.uid == 1201 and token_server.count() == 1


async def test_a_private_image_is_refused_anonymously(token_registry, resolver_for):
    result = await resolver_for(token_registry.config).lookup(token_registry.private)
    assert isinstance(result, ImageFailure) and not result.temporary
    assert "requires authentication (HTTP 401) and no credentials match this image" in result.message


async def test_basic_credentials_are_exchanged_for_a_token(token_registry, token_server, resolver_for,
                                                           sent):
    host = token_registry.server.host
    sources = _sources(host, HOST={"username": "alice", "password": ALICE_PASSWORD})
    resolver = resolver_for(token_registry.config, sources)
    result = await resolver.lookup(token_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    assert token_server.count(subject="alice") == 1 and token_server.count() == 1
    await resolver.lookup(token_registry.private)
    before = len(sent)
    await resolver.lookup(token_registry.public)  # another scope: its own token
    assert token_server.count(subject="alice") == 2
    # the registry's challenge is known by now: the token is fetched before the first request, no 401
    assert [s.status for s in sent[before:]] == [200] * (len(sent) - before)
    assert sent[before].url.startswith(token_server.realm)


async def test_a_user_without_access_is_refused_without_naming_the_secret(token_registry, resolver_for):
    sources = _sources(token_registry.server.host, HOST={"username": "bob", "password": BOB_PASSWORD})
    result = await resolver_for(token_registry.config, sources).lookup(token_registry.private)
    assert isinstance(result, ImageFailure) and not result.temporary
    assert "refused every matching credential" in result.message and "user 'bob' from test" in result.message
    assert BOB_PASSWORD not in result.message


async def test_each_matching_credential_is_tried_in_turn(token_registry, token_server, resolver_for, sent):
    # bob's key is more specific, so it is tried first; alice's is let in
    sources = _sources(token_registry.server.host,
                       HOST__private={"username": "bob", "password": BOB_PASSWORD},
                       HOST={"username": "alice", "password": ALICE_PASSWORD})
    result = await resolver_for(token_registry.config, sources).lookup(token_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    # bob's token grants nothing and is refused once; the lookup's later requests go straight to alice
    assert token_server.count(subject="bob") == 1 and token_server.count(subject="alice") == 1
    assert sum(1 for s in sent if "/v2/private/app/" in s.url and s.status == 401) == 2


async def test_an_identity_token_takes_the_oauth2_refresh_grant(token_registry, token_server, resolver_for):
    sources = _sources(token_registry.server.host, HOST={"identitytoken": ALICE_REFRESH})
    result = await resolver_for(token_registry.config, sources).lookup(token_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    assert [h.method for h in token_server.hits] == ["POST"]


async def test_an_identity_token_falls_back_to_the_get_where_oauth2_is_not_spoken(
    token_registry, token_server, resolver_for
):
    token_server.oauth2 = False
    sources = _sources(token_registry.server.host, HOST={"identitytoken": ALICE_REFRESH})
    result = await resolver_for(token_registry.config, sources).lookup(token_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    assert [(h.method, h.status, h.subject) for h in token_server.hits] == [("POST", 404, ""),
                                                                           ("GET", 200, "alice")]


async def test_a_registry_token_is_sent_as_it_is(token_registry, token_server, resolver_for):
    bearer = token_server.mint("alice", [{"type": "repository", "name": "private/app", "actions": ["pull"]}])
    sources = _sources(token_registry.server.host, HOST={"registrytoken": bearer})
    result = await resolver_for(token_registry.config, sources).lookup(token_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    assert token_server.hits == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("fields", "expires_in", "still_cached_at", "refetched_at"), [
    (("access_token",), None, 50, 60),  # no expires_in: 60 s, dropped shortly before
    (("token", "access_token"), 300, 250, 300),
])
async def test_tokens_are_cached_until_shortly_before_they_expire(
    token_registry, token_server, resolver_for, session, fields, expires_in, still_cached_at, refetched_at
):
    token_server.answer_fields, token_server.expires_in = fields, expires_in
    clock = Clock()
    tls = Transport(session=session, registries=token_registry.config.registry).tls
    auth = TokenAuthenticator(session=session, tls=tls, clock=clock)
    resolver = resolver_for(token_registry.config, auth=auth)
    assert (await resolver.lookup(token_registry.public)).uid == 1201
    assert token_server.count() == 1
    clock.now += still_cached_at
    assert (await resolver.lookup(token_registry.public)).uid == 1201
    assert token_server.count() == 1
    clock.now += refetched_at - still_cached_at
    assert (await resolver.lookup(token_registry.public)).uid == 1201
    assert token_server.count() == 2


async def test_concurrent_lookups_share_one_token_fetch(token_registry, token_server, resolver_for):
    resolver = resolver_for(token_registry.config)
    results = await asyncio.gather(*(resolver.lookup(token_registry.public) for _ in range(5)))
    assert all(r.uid == 1201 for r in results)
    assert token_server.count() == 1



async def test_one_pods_token_never_serves_another(token_registry, token_server, resolver_for):
    """Tokens are cached per credential: alice's token is not what a Pod without credentials gets."""
    alice = Keyring.from_docker_config(
        {"auths": {token_registry.server.host: {"username": "alice", "password": ALICE_PASSWORD}}},
        source="secret team-a/pull")
    resolver = resolver_for(token_registry.config, CredentialSources(pods=FakePods({"team-a": alice})))
    team_a, team_b = PullContext(namespace="team-a"), PullContext(namespace="team-b")
    assert (await resolver.lookup(token_registry.private, pull=team_a)).uid == 1202
    refused = await resolver.lookup(token_registry.private, pull=team_b)
    assert isinstance(refused, ImageFailure) and "no credentials match this image" in refused.message
    assert (await resolver.lookup(token_registry.private, pull=team_a)).uid == 1202
    assert token_server.count(subject="alice") == 1 and token_server.count(subject="") >= 1
