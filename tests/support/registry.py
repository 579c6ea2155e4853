"""Debian's ``docker-registry`` (the distribution project's registry 2.x), run on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import yaml

from tests.support.net import free_port, wait_for


class RegistryServer:
    """One registry process with a throwaway filesystem store; plain HTTP unless TLS files are given."""

    def __init__(self, *, tls_cert: str | None = None, tls_key: str | None = None,
                 client_cert: tuple[str, str] | None = None, proxy_remote: str | None = None,
                 auth: Mapping[str, object] | None = None, ca_file: str | None = None) -> None:
        """*client_cert* (a self-signed cert and its key) is the only client certificate let in:
        mutual TLS. *proxy_remote* makes this a pull-through cache of the registry at that URL.
        *auth* is the registry config's ``auth:`` section (htpasswd, token); *ca_file* is what
        clients trust its certificate through, when that is not self-signed."""
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        self._binary = binary
        self._tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        self._client_cert = client_cert
        self._proxy_remote = proxy_remote
        self._auth = auth
        self._ca_file = ca_file or tls_cert
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="registry-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host}"

    def start(self) -> RegistryServer:
        http: dict[str, object] = {"addr": self.host, "secret": "test-only-secret"}
        if self._tls:
            tls: dict[str, object] = {"certificate": self._tls[0], "key": self._tls[1]}
            if self._client_cert:
                tls["clientcas"] = [self._client_cert[0]]
            http["tls"] = tls
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self._dir / "store")},
                        "delete": {"enabled": True}},
            "http": http,
            **({"auth": dict(self._auth)} if self._auth else {}),
        }
        if self._proxy_remote:
            config["proxy"] = {"remoteurl": self._proxy_remote}
        config_path = self._dir / "config.yml"
        config_path.write_text(yaml.safe_dump(config))
        self._log = open(self._dir / "registry.log", "wb")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            [self._binary, "serve", str(config_path)], stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        )
        context = None
        if self._tls:
            import ssl

            context = ssl.create_default_context(cafile=self._ca_file)
            if self._client_cert:
                context.load_cert_chain(*self._client_cert)

        def up() -> bool | None:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"registry exited: {(self._dir / 'registry.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=context) as response:
                    return True if response.status == 200 else None
            except urllib.error.HTTPError as exc:  # a registry with auth answers, with a challenge
                return True if exc.code == 401 and self._auth else None

        wait_for(up, timeout=30, what=f"registry on {self.host} answering /v2/", interval=0.05,
                 retry_on=(OSError,))
        return self

    def blob_path(self, digest: str) -> Path:
        """Where the registry stores a blob: lets a test alter what it serves under that digest."""
        algorithm, _, hexdigest = digest.partition(":")
        return (self._dir / "store" / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest
                / "data")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
