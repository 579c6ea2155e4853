"""Our own HTTPS surface: TLS 1.2+ only, and for 1.2 only ECDHE key exchange with AEAD ciphers.

Handshakes go to ``mutator serve`` as a process; clients are deliberately weak
(``@SECLEVEL=0``) so that a refusal is the server's doing, not the client's.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import warnings
from collections.abc import Iterator

import pytest

from mutator.serve import tls
from tests.support.webhook import WebhookProcess


@pytest.fixture(scope="module")
def server() -> Iterator[WebhookProcess]:
    process = WebhookProcess(config=None).start()
    yield process
    assert process.stop() == 0


def handshake(server: WebhookProcess, *, version: ssl.TLSVersion, ciphers: str) -> tuple[str, str]:
    """Connect with exactly one protocol version and the given suites; returns (version, cipher)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers(ciphers)
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as conn:
        cipher = conn.cipher()
        assert cipher is not None
        return conn.version() or "", cipher[0]


def test_modern_clients_connect(server):
    assert handshake(server, version=ssl.TLSVersion.TLSv1_3, ciphers="ALL")[0] == "TLSv1.3"
    assert handshake(server, version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256") == (
        "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert handshake(server, version=ssl.TLSVersion.TLSv1_2,
                     ciphers="ECDHE-ECDSA-CHACHA20-POLY1305")[1] == "ECDHE-ECDSA-CHACHA20-POLY1305"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_before_1_2_is_refused(server, version):
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(server, version=version, ciphers="ALL:@SECLEVEL=0")


@pytest.mark.parametrize("cipher", [
    "ECDHE-ECDSA-AES128-SHA256",  # ECDHE, but CBC with HMAC: not AEAD (Python's default allows it)
    "ECDHE-ECDSA-AES256-SHA",  # CBC with SHA-1
    "AES128-GCM-SHA256",  # AEAD, but RSA key transport: no forward secrecy
])
def test_weak_tls_1_2_ciphers_are_refused(server, cipher):
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(server, version=ssl.TLSVersion.TLSv1_2, ciphers=f"{cipher}:@SECLEVEL=0")


def test_the_server_context_offers_only_ecdhe_aead_for_tls_1_2():
    with tempfile.TemporaryDirectory() as directory:
        context = tls.server_context(*tls.self_signed(directory))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    offered = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert offered and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in offered), offered
