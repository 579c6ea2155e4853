"""Protected registries on loopback: a test CA, htpasswd files, and a token server the tests own.

The token server speaks the distribution token protocol for real: it answers
``GET /token?service=…&scope=…`` (anonymously or with Basic credentials) and the
OAuth2 refresh-token ``POST``, and signs RS256 JWTs whose ``x5c`` header carries
its certificate, which Debian's ``docker-registry`` trusts through
``rootcertbundle``. It counts every token it hands out, so tests can prove what
the client cached.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.net import free_port


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


class TestCA:
    """A CA that signs loopback server certificates; ``cert_file`` is what clients trust."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = str(directory / "ca.crt")
        Path(self.cert_file).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def server_cert(self, name: str, host: str = "127.0.0.1") -> tuple[str, str]:
        """(cert, key) files for a server at *host*, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return str(cert_path), str(key_path)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cert_file)


def htpasswd(path: Path, users: Mapping[str, str]) -> str:
    """A bcrypt htpasswd file (``htpasswd -B``), as the registry's htpasswd auth requires."""
    lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True,
                            text=True).stdout.strip() for user, password in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenPolicy:
    """Who may do what: public repositories are pullable by anyone, grants give users more."""

    users: dict[str, str] = field(default_factory=dict)  # name -> password
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    public: set[str] = field(default_factory=set)
    grants: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (user, repository) -> actions

    def allowed(self, subject: str, repository: str) -> set[str]:
        actions = set(self.grants.get((subject, repository), set()))
        if repository in self.public:
            actions.add("pull")
        return actions


@dataclass(frozen=True)
class Hit:
    method: str
    subject: str  # "" for anonymous
    scopes: tuple[str, ...]
    status: int


class TokenServer:
    """The registry's token realm, over HTTPS from the test CA, on 127.0.0.1."""

    def __init__(self, ca: TestCA, policy: TokenPolicy, *, service: str = "test-registry",
                 issuer: str = "test-issuer") -> None:
        self.policy, self.service, self.issuer = policy, service, issuer
        self.port = free_port()
        self.realm = f"https://127.0.0.1:{self.port}/token"
        self.hits: list[Hit] = []
        self.issued: list[str] = []  # every token handed out, for tests that look for leaks
        self.answer_fields: tuple[str, ...] = ("token",)  # which names the token is sent under
        self.expires_in: int | None = 300
        self.issued_at = True
        self.oauth2 = True  # False: the POST refresh grant is answered 404, as GET-only realms do
        self._lock = threading.Lock()
        # the signing key and its self-signed certificate, which the registry's rootcertbundle holds
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(_name(issuer)).issuer_name(_name(issuer))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(self._key, hashes.SHA256())
        )
        self.signing_cert_file = str(ca.directory / "token-signing.crt")
        Path(self.signing_cert_file).write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        cert, key = ca.server_cert("token-server")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def registry_auth(self) -> dict[str, object]:
        """The ``auth:`` section of a registry config that trusts this server."""
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": self.signing_cert_file}}

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.hits.clear()
        self.answer_fields, self.expires_in, self.issued_at, self.oauth2 = ("token",), 300, True, True

    def count(self, *, subject: str | None = None) -> int:
        with self._lock:
            return sum(1 for h in self.hits if h.status == 200 and (subject is None or h.subject == subject))

    def mint(self, subject: str, access: list[dict[str, object]], *, seconds: int = 3600) -> str:
        """A signed JWT for *access*, as the registry expects it."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + seconds,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _grant(self, subject: str, scopes: list[str]) -> list[dict[str, object]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            granted = sorted(set(actions.split(",")) & self.policy.allowed(subject, name))
            access.append({"type": "repository", "name": name, "actions": granted})
        return access

    def _answer(self, subject: str, scopes: list[str]) -> dict[str, object]:
        token = self.mint(subject, self._grant(subject, scopes), seconds=self.expires_in or 60)
        with self._lock:
            self.issued.append(token)
        answer: dict[str, object] = {name: token for name in self.answer_fields}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        if self.issued_at:
            answer["issued_at"] = datetime.datetime.now(datetime.UTC).isoformat()
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _reply(self, status: int, subject: str, scopes: list[str], body: object = None) -> None:
                with server._lock:
                    server.hits.append(Hit(self.command, subject, tuple(scopes), status))
                body = body if body is not None else {"errors": [{"code": "UNAUTHORIZED"}]}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scopes = query.get("scope", [])
                subject = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    # a refresh token may stand in for a password, whatever the user name
                    subject = server.policy.refresh_tokens.get(password, "")
                    if not subject and server.policy.users.get(user) == password:
                        subject = user
                    if not subject:
                        self._reply(401, user, scopes)
                        return
                if query.get("service") != [server.service]:
                    self._reply(400, subject, scopes, {"error": "unknown service"})
                    return
                self._reply(200, subject, scopes, server._answer(subject, scopes))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                scopes = " ".join(form.get("scope", [])).split()
                if not server.oauth2:
                    self._reply(404, "", scopes)
                    return
                user = server.policy.refresh_tokens.get(form.get("refresh_token", [""])[0])
                if form.get("grant_type") != ["refresh_token"] or user is None:
                    self._reply(401, user or "", scopes)
                    return
                answer = server._answer(user, scopes)
                token = answer.get("token") or answer.get("access_token")
                self._reply(200, user, scopes, {"access_token": token,
                                                **{k: v for k, v in answer.items() if k not in ("token",)}})

        return Handler
