"""A small read-only client for the API server: GET a path over aiohttp with the cluster's credentials.

Only explicit sources are used (``--kubeconfig``, ``$KUBECONFIG``, the
``kubeconfig`` config key, or the in-cluster service account): a developer's
``~/.kube/config`` is never picked up by surprise, so ``mutator serve --dev`` on a
laptop does not start reading Secrets from whatever cluster is current.

The settings come from :mod:`mutator.resolve.kube.loader` (kubernetes-asyncio, in a child
process); requests go straight to the REST endpoints, so the generated client and
its model classes never load here. In a cluster the service-account token is
re-read from its file once a minute, as the kubelet rotates it.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp

from mutator.errors import ConfigError
from mutator.resolve.kube.child import run_module

log = logging.getLogger(__name__)

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"
LOAD_TIMEOUT_SECONDS = 60.0  # an exec plugin may be slow, not endless
TOKEN_REREAD_SECONDS = 60.0  # as kubernetes-asyncio's in-cluster loader does
CONNECT_SECONDS = 10.0


def kubeconfig_path(explicit: str | None) -> str | None:
    """The kubeconfig to use: the explicit one (flag or config key), else ``$KUBECONFIG``."""
    path = explicit or os.environ.get("KUBECONFIG") or None
    # $KUBECONFIG may list several files; the first is the one kubectl writes to
    return path.split(os.pathsep)[0] if path else None


def in_cluster() -> bool:
    return bool(os.environ.get(SERVICE_HOST_ENV))


@dataclass(frozen=True, slots=True)
class Settings:
    """How to reach one API server, as :mod:`mutator.resolve.kube.loader` found it."""

    host: str
    context: str = ""
    ca: str | None = None  # PEM
    cert: str | None = None  # PEM
    key: str | None = field(default=None, repr=False)  # PEM; never in a log line
    verify: bool = True
    tls_server_name: str | None = None
    proxy: str | None = None
    token: str | None = field(default=None, repr=False)  # the Authorization header's value ("Bearer …")
    token_file: str | None = None  # re-read as it rotates (in a cluster)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca) if self.ca else ssl.create_default_context()
        if self.cert:
            # the ssl module loads a certificate chain from files only: a private one, gone at once
            with tempfile.TemporaryDirectory(prefix="mutator-kube-") as directory:
                cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
                cert.write_text(self.cert)
                if self.key:
                    key.write_text(self.key)
                context.load_cert_chain(cert, key if self.key else None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


async def load_settings(*args: str) -> Settings:
    """Run the loader with *args*; :class:`ConfigError` with its one line when it cannot load them."""
    try:
        code, out, err = await run_module("mutator.resolve.kube.loader", *args, seconds=LOAD_TIMEOUT_SECONDS,
                                          stderr=True)
    except TimeoutError:
        raise ConfigError(f"not loaded within {LOAD_TIMEOUT_SECONDS:g} s") from None
    if code != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ConfigError(lines[-1] if lines else f"the loader exited {code}")
    found = json.loads(out)
    known = {each.name for each in fields(Settings)}
    return Settings(**{key: value for key, value in found.items() if key in known})


class KubeClient:
    """GETs against one API server; answers are aiohttp responses, released by the caller."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.host.rstrip("/")
        self._token = settings.token
        self._token_read = time.monotonic()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=settings.ssl_context()),
            headers={"Accept": "application/json", "User-Agent": "nonroot-mutator"})

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    def _authorization(self) -> dict[str, str]:
        path = self.settings.token_file
        if path and time.monotonic() - self._token_read >= TOKEN_REREAD_SECONDS:
            try:
                token = Path(path).read_text().strip()
            except OSError as exc:
                log.warning("cannot re-read the service-account token %s: %s", path, exc)
            else:
                if token:
                    self._token = f"Bearer {token}"
            self._token_read = time.monotonic()
        return {"Authorization": self._token} if self._token else {}

    async def get(self, path: str, query: list[tuple[str, Any]] | None = None, *,
                  seconds: float | None) -> aiohttp.ClientResponse:
        """GET *path* (already quoted) with *query*; *seconds* bound the whole answer, body included."""
        return await self._session.get(
            self.host + path, params=[(k, str(v)) for k, v in query or ()],
            headers=self._authorization(), proxy=self.settings.proxy,
            server_hostname=self.settings.tls_server_name,
            timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=CONNECT_SECONDS))


async def api_client(*, kubeconfig: str | None) -> KubeClient | None:
    """A client for the cluster, or ``None`` when there is no cluster to talk to.

    Raises :class:`ConfigError` when a kubeconfig is named but unusable: an
    operator who pointed at one expects it to be used.
    """
    path = kubeconfig_path(kubeconfig)
    if path:
        try:
            settings = await load_settings("--kubeconfig", path)
        except ConfigError as exc:
            raise ConfigError(f"kubeconfig {path} is unusable: {exc}") from None
        log.info("reading the cluster at %s (kubeconfig %s)", settings.host, path)
    elif in_cluster():
        try:
            settings = await load_settings("--in-cluster")
        except ConfigError as exc:
            raise ConfigError(f"in-cluster service account is unusable: {exc}") from None
        log.info("reading the cluster at %s (in-cluster service account)", settings.host)
    else:
        return None
    return KubeClient(settings)
