"""Basic auth against Debian's docker-registry with htpasswd (bcrypt) behind TLS from a test CA."""

from __future__ import annotations

import pytest

from mutator.decide.images import ImageFailure, ImageUser
from mutator.resolve.registry.authn.credentials import CredentialSources
from mutator.resolve.registry.authn.keyring import Keyring
from tests.registry_auth.conftest import ALICE_PASSWORD

pytestmark = pytest.mark.registry


def _sources(host: str, user: str, password: str) -> CredentialSources:
    config = {"auths": {f"https://{host}": {"username": user, "password": password}}}
    return CredentialSources(docker_config=Keyring.from_docker_config(config, source="test"))


async def test_basic_credentials_read_a_private_image(basic_registry, resolver_for, sent):
    alice = _sources(basic_registry.server.host, "alice", ALICE_PASSWORD)
    resolver = resolver_for(basic_registry.config, alice)
    result = await resolver.lookup(basic_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1302, result
    await resolver.lookup(basic_registry.private)
    # one 401 taught the scheme; every later request carried the credentials from the start
    assert [s.status for s in sent].count(401) == 1
    assert all(s.status == 200 for s in sent[2:])


async def test_no_credentials_and_wrong_credentials_are_refused(basic_registry, resolver_for, sent):
    anonymous = await resolver_for(basic_registry.config).lookup(basic_registry.private)
    assert isinstance(anonymous, ImageFailure) and not anonymous.temporary
    assert "requires authentication" in anonymous.message

    wrong = resolver_for(basic_registry.config, _sources(basic_registry.server.host, "alice", "not-it"))
    result = await wrong.lookup(basic_registry.private)
    assert isinstance(result, ImageFailure) and "refused every matching credential" in result.message
    assert "not-it" not in result.message
    # once Basic is known, credentials refused up front are not sent a second time
    before = len(sent)
    assert isinstance(await wrong.lookup(basic_registry.private), ImageFailure)
    assert [s.status for s in sent[before:]] == [401]


async def test_credentials_for_another_port_are_not_offered(basic_registry, resolver_for, sent):
    host, _, port = basic_registry.server.host.rpartition(":")
    elsewhere = _sources(f"{host}:{int(port) + 1}", "alice", ALICE_PASSWORD)
    result = await resolver_for(basic_registry.config, elsewhere).lookup(basic_registry.private)
    assert isinstance(result, ImageFailure) and "no credentials match this image" in result.message
