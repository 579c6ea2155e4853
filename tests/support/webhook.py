"""``mutator serve`` as a real process on loopback HTTPS, as the API server sees it."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import urllib3

from mutator.serve.tls import self_signed

_LISTENING = re.compile(r"listening on (https://\S+)")
_METRICS = re.compile(r"metrics on (http://\S+)/metrics")


class WebhookProcess:
    """Starts ``python -m mutator serve`` with a fresh self-signed cert for 127.0.0.1.

    The server prints its URL once it accepts connections; reading that line
    is the readiness signal, so no polling is needed.
    """

    def __init__(self, *, config: str | None, host: str = "127.0.0.1", port: int = 0,
                 args: Sequence[str] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="webhook-"))
        self.cert, self.key = self_signed(str(self.dir), ("127.0.0.1", "localhost"))
        self._config = config
        self._listen = f"{host}:{port}"
        self._args = tuple(args)
        self.url = ""
        self.metrics_url = ""  # with --metrics-listen: the plain-HTTP base URL
        self.log = self.dir / "webhook.log"
        self._process: subprocess.Popen[str] | None = None

    def start(self, *, timeout: float = 30) -> WebhookProcess:
        command = [sys.executable, "-m", "mutator", "serve", "--listen", self._listen,
                   "--tls-cert", self.cert, "--tls-key", self.key]
        if self._config:
            command += ["--config", self._config]
        command += self._args
        self._stderr = open(self.log, "w")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self._process.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        match = _LISTENING.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"webhook did not start: {line!r}\n{self.log.read_text()}")
        self.url = match.group(1)
        if "--metrics-listen" in self._args:
            try:
                found = _METRICS.search(lines.get(timeout=timeout))
            except queue.Empty:
                found = None
            if not found:
                self.stop()
                raise RuntimeError(f"no metrics line from the webhook\n{self.log.read_text()}")
            self.metrics_url = found.group(1)
        return self

    def metric(self, name: str) -> float:
        """Sum of the /metrics samples whose line starts with *name* (labels included)."""
        context = ssl.create_default_context(cafile=self.cert)
        with urllib.request.urlopen(f"{self.url}/metrics", context=context, timeout=10) as reply:
            text = reply.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def https(self) -> urllib3.PoolManager:
        """A client that trusts this webhook's certificate and never retries behind the test's back."""
        return urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=self.cert),
                                   retries=False, timeout=30)

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def process(self) -> subprocess.Popen[str]:
        assert self._process is not None, "not started"
        return self._process

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> int | None:
        """SIGTERM, as Kubernetes sends; returns the exit code."""
        if self._process is None or self._process.poll() is not None:
            return self._process.returncode if self._process else None
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self._process.wait()
        finally:
            self._stderr.close()


@contextlib.contextmanager
def serving(directory: Path, *plain_http_hosts: str) -> Iterator[WebhookProcess]:
    """A webhook that reaches *plain_http_hosts* (loopback registries) over plain HTTP; must exit 0."""
    config = directory / "config.yaml"
    config.write_text("registries:\n" + "".join(f'  "{h}": {{plain_http: true}}\n' for h in plain_http_hosts))
    process = WebhookProcess(config=str(config)).start()
    yield process
    assert process.stop() == 0

