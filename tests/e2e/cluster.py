"""A throwaway Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

Why: the webhook's real contract is with the API server (AdmissionReview shapes, how patches are applied,
failurePolicy, namespace selectors, ServiceAccount admission running before webhooks), and fakes cannot
reproduce that. The test machines have no container engine (no kind, no k3d), so the control-plane binaries
run directly as subprocesses. There is no kubelet: Pods are stored but never run, which is all an admission
webhook's tests need.

Everything listens on 127.0.0.1 on ports picked at start, and all state lives in one temporary directory, so
several clusters (or test sessions) can run side by side and nothing outside that directory is written.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.net import free_ports, wait_for

ADMISSION_PLUGINS = "NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
# serviceaccount makes each namespace's `default` ServiceAccount, serviceaccount-token gives it the token
# Secret that ServiceAccount admission insists on (1.20 has no bound-token volumes by default), namespace
# and garbagecollector make deletion finish, replicaset and deployment turn Deployments into Pods.
CONTROLLERS = "serviceaccount,serviceaccount-token,namespace,garbagecollector,replicaset,deployment"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"  # a config value only: nothing routes to it
# Metadata-level events for Pods only: enough to read webhooks' auditAnnotations back, and small.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "resources": [{"group": "", "resources": ["pods"]}]}, {"level": "None"}],
}
KUBECTL_TIMEOUT = 60.0
LOG_TAIL_LINES = 40


class ClusterError(RuntimeError):
    """The control plane failed to start, or a component exited; the message carries the log tail."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed. Subclasses CalledProcessError so callers may catch either.

    The default CalledProcessError message hides stderr, which is where kubectl says what went wrong.
    """

    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited with {self.returncode}\n"
            f"--- stderr ---\n{(self.stderr or '').strip()}\n--- stdout ---\n{(self.stdout or '').strip()}"
        )


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def http_get(
    url: str, *, context: ssl.SSLContext | None, token: str | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET ``url`` and return (status, body); HTTP error statuses are returned, not raised.

    Proxies from the environment are ignored on purpose: every URL here is on loopback.
    """
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager on loopback, for the end-to-end tests.

    Usage: ``with KubeCluster(bin_dir) as kube: kube.kubectl("get", "ns")``, or ``start()``/``stop()``.
    After ``start()``: ``server`` is the https URL, ``kubeconfig`` a kubeconfig for an admin (group
    ``system:masters``, authenticated by the bearer ``token``), ``ca_file`` the PEM that verifies the API
    server's certificate, ``workdir`` the temporary directory with all state and the components' logs
    (``etcd.log``, ``kube-apiserver.log``, ``kube-controller-manager.log``).
    """

    def __init__(
        self,
        bin_dir: str | os.PathLike[str],
        *,
        etcd: str = "etcd",
        kubectl: str = "kubectl",
        openssl: str = "openssl",
        apiserver_args: Sequence[str] = (),
        controller_manager_args: Sequence[str] = (),
        startup_timeout: float = 90.0,
        keep_workdir: bool = False,
    ) -> None:
        """Configure, without starting anything.

        ``bin_dir`` holds kube-apiserver and kube-controller-manager (what ``tests/e2e/kube.sh`` prints);
        ``etcd``/``kubectl``/``openssl`` are looked up on PATH unless given as paths. The ``*_args`` are
        appended to the components' command lines, so a test tier can turn on e.g. feature gates.
        ``keep_workdir`` leaves the temporary directory behind on ``stop()`` for post-mortems.
        """
        self.bin_dir = Path(bin_dir)
        self.etcd_bin = etcd
        self.kubectl_bin = kubectl
        self.openssl_bin = openssl
        self.apiserver_args = tuple(apiserver_args)
        self.controller_manager_args = tuple(controller_manager_args)
        self.startup_timeout = startup_timeout
        self.keep_workdir = keep_workdir

        self.workdir: Path | None = None
        self.server = ""
        self.kubeconfig: Path | None = None
        self.ca_file: Path | None = None
        self.token = ""
        self.audit_log: Path | None = None  # the API server's audit log (JSON lines), Pods only
        self.startup_seconds: float | None = None
        self._procs: list[_Process] = []
        self._ssl: ssl.SSLContext | None = None
        self._last_readyz = "<no response>"

    # ----------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, *, attempts: int = 3) -> KubeCluster:
        """Start etcd, the API server and the controller manager, and return once Pods can be created.

        "Ready" means: API server ``/readyz`` is ok, controller manager ``/healthz`` is ok, and the
        ``default`` namespace's ``default`` ServiceAccount has its token (proof the controllers run).
        Free ports are picked just before use, so another process can take one first; such a bind failure
        is retried with fresh ports up to ``attempts`` times. Each stage waits at most ``startup_timeout``.
        On any failure everything started is stopped and the error carries the relevant log tail.
        """
        if self._procs:
            raise ClusterError("cluster already started")
        for attempt in range(1, attempts + 1):
            began = time.monotonic()
            try:
                self._start_once()
            except ClusterError as exc:
                self.stop()
                if attempt < attempts and "address already in use" in str(exc):
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - began
            return self
        raise AssertionError("unreachable")

    def stop(self, *, grace: float = 10.0) -> None:
        """Stop all components (SIGTERM, then SIGKILL after ``grace`` s) and delete the work directory.

        Controller manager first, etcd last, so no component spends its shutdown complaining about a peer
        that is already gone. Safe to call more than once and after a failed ``start()``.
        """
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
                try:
                    proc.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(timeout=grace)
        self._procs.clear()
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ------------------------------------------------------------------------------------ start-up

    def _start_once(self) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="nonroot-mutator-kube-"))
        self.workdir = workdir
        etcd_client, etcd_peer, api_port, cm_port = free_ports(4)

        self.token = secrets.token_hex(24)
        tokens = workdir / "tokens.csv"
        # token,user,uid,"groups": system:masters bypasses RBAC, like a cluster-admin kubeconfig would.
        tokens.write_text(f'{self.token},e2e-admin,e2e-admin,"system:masters"\n')
        tokens.chmod(0o600)
        sa_key, sa_pub = workdir / "sa.key", workdir / "sa.pub"
        self._run_openssl("genrsa", "-out", str(sa_key), "2048")
        self._run_openssl("rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))

        cert_dir = workdir / "apiserver-certs"
        self.ca_file = cert_dir / "apiserver.crt"
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = workdir / "kubeconfig"
        self._write_kubeconfig(self.kubeconfig)
        audit_policy = workdir / "audit-policy.json"  # JSON is YAML
        audit_policy.write_text(json.dumps(AUDIT_POLICY))
        self.audit_log = workdir / "audit.log"

        self._spawn(
            "etcd",
            [
                self.etcd_bin,
                "--name=e2e",
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}",
                "--logger=zap",
            ],
        )
        self._await(
            lambda: http_get(f"http://127.0.0.1:{etcd_client}/health", context=None)[0] == 200,
            what="etcd /health",
            component="etcd",
        )

        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # There is no kubelet or kube-proxy, so the `kubernetes` Service's Endpoints are not kept.
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--cert-dir={cert_dir}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--enable-admission-plugins={ADMISSION_PLUGINS}",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                *self.apiserver_args,
            ],
        )
        self._await(self._apiserver_ready, what="kube-apiserver /readyz", component="kube-apiserver")

        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={CONTROLLERS}",
                f"--service-account-private-key-file={sa_key}",
                # The self-signed serving cert doubles as the root CA put into ServiceAccount token Secrets.
                f"--root-ca-file={self.ca_file}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                "--port=0",  # the deprecated insecure port would otherwise listen on 0.0.0.0:10252
                f"--cert-dir={workdir / 'controller-manager-certs'}",
                "--profiling=false",
                *self.controller_manager_args,
            ],
        )
        # /healthz is in --authorization-always-allow-paths, so no credentials are sent and the
        # controller manager's own self-signed certificate need not be trusted.
        cm_context = ssl.create_default_context()
        cm_context.check_hostname = False
        cm_context.verify_mode = ssl.CERT_NONE
        self._await(
            lambda: http_get(f"https://127.0.0.1:{cm_port}/healthz", context=cm_context)[0] == 200,
            what="kube-controller-manager /healthz",
            component="kube-controller-manager",
        )
        self._await(
            lambda: self._service_account_ready("default"),
            what="the controller manager to give namespace `default` a ServiceAccount token",
            component="kube-controller-manager",
        )

    def _await(self, predicate: Callable[[], bool], *, what: str, component: str) -> None:
        """wait_for during start-up: also fail fast if any component exits, and on timeout report the
        tail of ``component``'s log, which is where the reason is (the work directory is removed next)."""

        def check() -> bool:
            return self._alive() and predicate()

        try:
            wait_for(check, timeout=self.startup_timeout, what=what, retry_on=(OSError,))
        except TimeoutError as exc:
            detail = f"\nlast /readyz?verbose:\n{self._last_readyz}" if component == "kube-apiserver" else ""
            raise ClusterError(
                f"{exc}{detail}\nlast lines of {component}.log:\n{self.log_tail(component)}"
            ) from None

    def _run_openssl(self, *args: str) -> None:
        result = subprocess.run(
            [self.openssl_bin, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise ClusterError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")

    def _write_kubeconfig(self, path: Path) -> None:
        # JSON is YAML, so no YAML library is needed to write a kubeconfig.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "e2e-admin", "user": {"token": self.token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e-admin"}}],
            "current-context": "e2e",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _spawn(self, name: str, argv: list[str]) -> None:
        assert self.workdir is not None
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env(),
                # Own session: a Ctrl-C in the terminal reaches pytest, which then stops us in order.
                start_new_session=True,
            )
        self._procs.append(_Process(name, popen, log))

    def _alive(self) -> bool:
        """Raise ClusterError, with the log tail, if any component has exited; else return True."""
        for proc in self._procs:
            code = proc.popen.poll()
            if code is not None:
                raise ClusterError(
                    f"{proc.name} exited with {code}; last lines of its log:\n{_tail(proc.log)}"
                )
        return True

    def _apiserver_ready(self) -> bool:
        self._alive()
        assert self.ca_file is not None
        if not self.ca_file.exists():  # written by the API server just before it serves
            return False
        self._ssl = None  # the file may have been half-written on the previous attempt
        status, body = self._api_request("/readyz?verbose")
        self._last_readyz = body.decode(errors="replace").strip()
        return status == 200

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            assert self.ca_file is not None
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def _api_request(self, path: str) -> tuple[int, bytes]:
        return http_get(self.server + path, context=self._context(), token=self.token)

    def _service_account_ready(self, namespace: str) -> bool:
        """True once the namespace's `default` ServiceAccount exists and references its token Secret.

        Why the Secret too: in 1.20 ServiceAccount admission refuses a Pod ("no API token found for service
        account") until the token controller has added the Secret to the ServiceAccount.
        """
        account = self.api_get(f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/serviceaccounts/default")
        return bool(account and account.get("secrets"))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        loopback = "127.0.0.1,localhost"
        for key in ("NO_PROXY", "no_proxy"):
            env[key] = f"{env[key]},{loopback}" if env.get(key) else loopback
        return env

    # ------------------------------------------------------------------------------------ clients

    def api_get(self, path: str) -> Any:
        """GET an API path (e.g. ``/api/v1/namespaces/x``) as the admin; parsed JSON, or None on 404.

        Faster than a kubectl process per call, which matters inside polling loops.
        """
        status, body = self._api_request(path)
        if status == 404:
            return None
        if status != 200:
            raise ClusterError(f"GET {path} returned {status}: {body[:500].decode(errors='replace')}")
        return json.loads(body)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = KUBECTL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster as the admin and return the completed process (text, captured).

        ``--cache-dir`` points into the work directory so kubectl's discovery cache does not land in
        ``~/.kube`` and cannot leak between clusters that reuse a port. With ``check`` a non-zero exit
        raises KubectlError, whose message includes stderr.
        """
        if self.kubeconfig is None or self.workdir is None:
            raise ClusterError("cluster not started")
        argv = [
            self.kubectl_bin,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self._env(), check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def get_json(self, *args: str) -> Any:
        """``kubectl <args> -o json``, parsed. E.g. ``get_json("-n", ns, "get", "pods")``."""
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def create_namespace(
        self, name: str, labels: Mapping[str, str] | None = None, *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Create a namespace with ``labels`` and return it once Pods can be created in it.

        Why wait: Pods are refused until the controller manager has made the namespace's `default`
        ServiceAccount and its token, which happens a moment after the namespace appears.
        """
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(labels or {})},
        }
        created: dict[str, Any] = json.loads(
            self.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
        )
        wait_for(
            lambda: self._service_account_ready(name),
            timeout=timeout,
            what=f"the default ServiceAccount and its token in namespace {name!r}",
        )
        return created

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` of a component's log (``etcd``, ``kube-apiserver``, ...), for error messages."""
        for proc in self._procs:
            if proc.name == name:
                return _tail(proc.log, lines)
        raise KeyError(name)


__all__ = ["ClusterError", "KubeCluster", "KubectlError", "free_ports", "http_get", "wait_for"]
