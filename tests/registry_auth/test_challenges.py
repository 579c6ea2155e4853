"""A registry that answers 401 without saying how to authenticate: the client pings /v2/ once to learn it.

Some registries do this on blob or manifest paths. The peer here is a small HTTPS
proxy the tests own in front of the token-protected docker-registry; it drops the
``WWW-Authenticate`` header everywhere but ``/v2/`` and counts the pings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from mutator.config import from_mapping
from mutator.decide.images import ImageFailure, ImageUser
from mutator.resolve.registry.authn.credentials import CredentialSources
from mutator.resolve.registry.authn.keyring import Keyring
from mutator.serve.tls import server_context
from tests.support.net import free_port

pytestmark = pytest.mark.registry


@dataclass
class Proxy:
    host: str
    pings: list[int] = field(default_factory=list)


@pytest.fixture
async def silent_proxy(ca, token_registry) -> AsyncIterator[Proxy]:
    proxy = Proxy(f"127.0.0.1:{free_port()}")
    upstream = token_registry.server.url

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Accept")}
        async with client.get(f"{upstream}{request.path_qs}", headers=headers, ssl=ca.client_context(),
                              allow_redirects=False) as answer:
            body = await answer.read()
            out = {k: v for k, v in answer.headers.items()
                   if k in ("Content-Type", "Docker-Content-Digest", "WWW-Authenticate", "Location")}
        if request.path == "/v2/":
            proxy.pings.append(answer.status)
        else:
            out.pop("WWW-Authenticate", None)
        return web.Response(status=answer.status, body=body, headers=out)

    app = web.Application()
    app.router.add_get("/{tail:.*}", forward)
    runner = web.AppRunner(app)
    cert, key = ca.server_cert("silent-proxy")
    async with aiohttp.ClientSession() as client:
        await runner.setup()
        host, port = proxy.host.split(":")
        await web.TCPSite(runner, host, int(port), ssl_context=server_context(cert, key)).start()
        try:
            yield proxy
        finally:
            await runner.cleanup()


async def test_a_401_without_a_challenge_is_answered_after_one_ping(ca, silent_proxy, token_server,
                                                                    resolver_for, sent):
    token_server.reset()
    config = from_mapping({"registries": {silent_proxy.host: {"ca_file": ca.cert_file}}})
    resolver = resolver_for(config)
    image = f"{silent_proxy.host}/public/app:v1"
    result = await resolver.lookup(image)
    assert isinstance(result, ImageUser) and result.uid == 1201, result
    assert silent_proxy.pings == [401]
    assert (await resolver.lookup(image)).uid == 1201
    assert silent_proxy.pings == [401]  # learned once, per registry
    assert token_server.count() == 1
    assert [s.status for s in sent].count(401) == 2  # the challenge-less 401 and the ping, nothing more


async def test_credentials_are_never_sent_to_a_plain_http_realm(ca, resolver_for):
    """An HTTPS registry naming an http:// realm would have the password cross the network in clear."""
    realm_hits: list[str] = []

    async def realm(request: web.Request) -> web.Response:
        realm_hits.append(request.headers.get("Authorization", ""))
        return web.json_response({"token": "t"})

    registry_host = f"127.0.0.1:{free_port()}"
    realm_port = free_port()

    async def challenge(request: web.Request) -> web.Response:
        return web.Response(status=401, headers={
            "WWW-Authenticate": f'Bearer realm="http://127.0.0.1:{realm_port}/token",service="s"'})

    registry_app, realm_app = web.Application(), web.Application()
    registry_app.router.add_get("/{tail:.*}", challenge)
    realm_app.router.add_get("/token", realm)
    runners = [web.AppRunner(registry_app), web.AppRunner(realm_app)]
    cert, key = ca.server_cert("http-realm-registry")
    for runner in runners:
        await runner.setup()
    try:
        await web.TCPSite(runners[0], "127.0.0.1", int(registry_host.split(":")[1]),
                          ssl_context=server_context(cert, key)).start()
        await web.TCPSite(runners[1], "127.0.0.1", realm_port).start()
        config = from_mapping({"registries": {registry_host: {"ca_file": ca.cert_file}}})
        keyring = Keyring.from_docker_config(
            {"auths": {registry_host: {"username": "alice", "password": "never-in-clear"}}}, source="test")
        result = await resolver_for(config, CredentialSources(docker_config=keyring)).lookup(
            f"{registry_host}/team/app:v1")
        assert isinstance(result, ImageFailure) and not result.temporary
        assert f"asks for credentials to be sent to a plain-HTTP realm http://127.0.0.1:{realm_port}" \
            in result.message
        assert realm_hits == []
    finally:
        for runner in runners:
            await runner.cleanup()
