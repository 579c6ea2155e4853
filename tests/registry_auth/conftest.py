"""Protected registries on loopback: TLS from a test CA, htpasswd Basic auth, and token auth
backed by a token server the tests own. Session-scoped: each starts once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from mutator.config import Config, from_mapping
from mutator.resolve.registry.authn.credentials import CredentialSources, PullContext
from mutator.resolve.registry.authn.keyring import Keyring
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver
from tests.support.auth import TestCA, TokenPolicy, TokenServer, basic, htpasswd
from tests.support.images import Pusher, layer, passwd
from tests.support.registry import RegistryServer

# Secrets distinctive enough to grep any output for.
ALICE_PASSWORD = "alice-pw-7f3c9e1b"
BOB_PASSWORD = "bob-pw-2d8a4f6c"
ALICE_REFRESH = "alice-refresh-5b1e7d3a"
PUSHER_PASSWORD = "pusher-pw-9c4b2e8f"


@dataclass(frozen=True)
class Protected:
    """A registry and the references of the images the tests pushed to it."""

    server: RegistryServer
    public: str  # pullable anonymously (token registry only)
    private: str  # pullable by alice only
    config: Config  # reaches it over TLS with the test CA


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def token_server(ca: TestCA) -> Iterator[TokenServer]:
    policy = TokenPolicy(
        users={"alice": ALICE_PASSWORD, "bob": BOB_PASSWORD},
        refresh_tokens={ALICE_REFRESH: "alice"},
        public={"public/app"},
        grants={("alice", "private/app"): {"pull"}},
    )
    server = TokenServer(ca, policy).start()
    yield server
    server.stop()


def _push(pusher: Pusher, repository: str, uid: int) -> str:
    return pusher.image(repository, "v1", user="app",
                        layers=[layer({"etc/passwd": passwd(("app", uid, uid))})]).reference


def _config(ca: TestCA, server: RegistryServer) -> Config:
    return from_mapping({"registries": {server.host: {"ca_file": ca.cert_file}}})


@pytest.fixture(scope="session")
def token_registry(ca: TestCA, token_server: TokenServer) -> Iterator[Protected]:
    cert, key = ca.server_cert("token-registry")
    server = RegistryServer(tls_cert=cert, tls_key=key, auth=token_server.registry_auth(),
                            ca_file=ca.cert_file).start()
    try:
        access = [{"type": "repository", "name": name, "actions": ["pull", "push"]}
                  for name in ("public/app", "private/app")]
        pusher = Pusher(server.url, context=ca.client_context(),
                        authorization=f"Bearer {token_server.mint('pusher', access)}")
        yield Protected(server, _push(pusher, "public/app", 1201), _push(pusher, "private/app", 1202),
                        _config(ca, server))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def basic_registry(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    cert, key = ca.server_cert("basic-registry")
    users = htpasswd(tmp_path_factory.mktemp("htpasswd") / "htpasswd",
                     {"alice": ALICE_PASSWORD, "pusher": PUSHER_PASSWORD})
    server = RegistryServer(tls_cert=cert, tls_key=key, ca_file=ca.cert_file,
                            auth={"htpasswd": {"realm": "test-basic", "path": users}}).start()
    try:
        pusher = Pusher(server.url, context=ca.client_context(),
                        authorization=basic("pusher", PUSHER_PASSWORD))
        private = _push(pusher, "private/app", 1302)
        yield Protected(server, "", private, _config(ca, server))
    finally:
        server.stop()


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    status: int


@pytest.fixture
def sent() -> list[Sent]:
    """Every HTTP request the test's session made, with its answer: round trips, counted."""
    return []


@pytest.fixture
async def session(sent: list[Sent]) -> AsyncIterator[aiohttp.ClientSession]:
    trace = aiohttp.TraceConfig()

    async def on_end(_session, _context, params: aiohttp.TraceRequestEndParams) -> None:
        sent.append(Sent(params.method, str(params.url), params.response.status))

    trace.on_request_end.append(on_end)
    async with aiohttp.ClientSession(trace_configs=[trace]) as client_session:
        yield client_session


@pytest.fixture
def resolver_for(session: aiohttp.ClientSession):
    """A fresh resolver (cold caches) for *config* and credential *sources*."""
    def make(config: Config, sources: CredentialSources | None = None, **client_options) -> Resolver:
        client = RegistryClient(session=session, registries=config.registry, **client_options)
        return Resolver(client=client, config=config, credentials=sources)
    return make


class FakePods:
    """Stands in for the Kubernetes-backed hook: a fixed keyring per namespace."""

    def __init__(self, keyrings: dict[str, Keyring]) -> None:
        self.keyrings, self.asked = keyrings, []

    async def keyring(self, pod: PullContext) -> Keyring | None:
        self.asked.append(pod)
        if pod.namespace == "broken":
            raise OSError("the API server is not answering")
        return self.keyrings.get(pod.namespace)
