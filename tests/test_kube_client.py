"""The REST client for the API server, against a TLS peer the test owns (the real API server is in e2e).

What kubernetes-asyncio loads from a kubeconfig (embedded CA, client certificate and key, token)
must reach the wire: the peer requires the client certificate and records what it was sent.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from mutator.commands.report import connect
from mutator.errors import ClusterUnreachable, ConfigError
from mutator.resolve.kube import client as kube_client
from mutator.resolve.kube.client import KubeClient, Settings, api_client
from tests.support.auth import TestCA


class Peer:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        peer_cert = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in (peer_cert or {}).get("subject", ()))
        self.seen.append({"path": request.path, "query": dict(request.query),
                          "authorization": request.headers.get("Authorization"),
                          "client": subject.get("commonName")})
        return web.json_response({"kind": "NamespaceList", "items": [], "metadata": {}})


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
async def peer(ca: TestCA) -> AsyncIterator[Peer]:
    """An HTTPS server on loopback that requires a client certificate signed by *ca*."""
    cert, key = ca.server_cert("api")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca.cert_file)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    found = Peer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"https://127.0.0.1:{port}"
    yield found
    await runner.cleanup()


def b64(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def kubeconfig(tmp_path: Path, ca: TestCA, server: str, *, context: str = "peer") -> Path:
    cert, key = ca.server_cert("kube-user")
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "certificate-authority-data": b64(ca.cert_file)}}],
        "users": [{"name": "u", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key),
                                         "token": "t0ken"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
        "current-context": context,
    }))
    return path


async def test_a_kubeconfigs_ca_client_certificate_and_token_reach_the_api_server(peer, ca, tmp_path):
    api = await api_client(kubeconfig=str(kubeconfig(tmp_path, ca, peer.url)))
    assert api is not None and api.host == peer.url
    async with api, await api.get("/api/v1/secrets", [("fieldSelector", "type=a/b"), ("watch", 1)],
                                  seconds=10) as response:
        assert response.status == 200 and (await response.json())["items"] == []
    assert peer.seen == [{"path": "/api/v1/secrets", "query": {"fieldSelector": "type=a/b", "watch": "1"},
                          "authorization": "Bearer t0ken", "client": "kube-user"}]


async def test_report_connects_with_the_named_context_and_says_its_name(peer, ca, tmp_path):
    path = kubeconfig(tmp_path, ca, peer.url, context="staging")
    api, context = await connect(kubeconfig=str(path), context=None, in_cluster=False)
    async with api:
        assert context == "staging" and api.host == peer.url
    with pytest.raises(ClusterUnreachable, match=r"cannot load the cluster's configuration: .*nope"):
        await connect(kubeconfig=str(path), context="nope", in_cluster=False)


async def test_an_unusable_kubeconfig_is_one_line_naming_it(tmp_path):
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(ConfigError, match=f"^kubeconfig {broken} is unusable: [^\n]+$"):
        await api_client(kubeconfig=str(broken))


def pod_settings(ca: TestCA, host: str, token: Path) -> Settings:
    """What the loader finds in a Pod: the cluster's CA, the token read at start, its file."""
    cert, key = ca.server_cert("pod")  # the peer wants a client certificate from everyone
    return Settings(host=host, ca=Path(ca.cert_file).read_text(), cert=Path(cert).read_text(),
                    key=Path(key).read_text(), token="Bearer first", token_file=str(token))


async def test_a_rotated_service_account_token_is_read_again(peer, ca, tmp_path, monkeypatch):
    token = tmp_path / "token"
    async with KubeClient(pod_settings(ca, peer.url, token)) as api:
        # within the period the token loaded is used as is, after it the file's current one
        for value in ("not-yet", "second", "third"):
            token.write_text(value)
            (await api.get("/api/v1/serviceaccounts", seconds=10)).release()
            monkeypatch.setattr(kube_client, "TOKEN_REREAD_SECONDS", 0.0)
    assert [hit["authorization"] for hit in peer.seen] == ["Bearer first", "Bearer second", "Bearer third"]
    assert "first" not in repr(api.settings) and "PRIVATE KEY" not in repr(api.settings)


async def test_an_unusable_in_cluster_account_is_one_line_saying_so(monkeypatch):
    """The service's address is set, as in a Pod, but this machine has no service-account token."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    with pytest.raises(ConfigError, match=r"^in-cluster service account is unusable: .*token file"):
        await api_client(kubeconfig=None)
