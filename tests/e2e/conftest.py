"""Fixtures for the end-to-end tier: a real control plane (etcd, kube-apiserver, kube-controller-manager).

Everything collected under tests/e2e is marked ``e2e`` here, so ``-m "not e2e"`` leaves the tier out.
Missing tools make the fixtures fail rather than skip: CI installs them, and a silently skipped tier would
read as green.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.auth import TestCA, basic, htpasswd
from tests.support.chart import NAMESPACE
from tests.support.images import Pusher, layer, passwd
from tests.support.registry import RegistryServer
from tests.support.webhook import WebhookProcess

from .cluster import KubeCluster
from .webhook_config import rbac_objects, rendered

E2E_DIR = Path(__file__).resolve().parent
KUBE_SH = E2E_DIR / "kube.sh"
# A cold build of the API server from source takes ~6-9 minutes; a warm cache answers in about a second.
BUILD_TIMEOUT = float(os.environ.get("MUTATOR_KUBE_BUILD_TIMEOUT", "1800"))
REQUIRED_TOOLS = ("bash", "etcd", "kubectl", "openssl")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under tests/e2e as ``e2e`` and keep the cluster's start-up out of their timeout.

    This hook sees every collected item, not only this directory's, hence the path check. The timeout part:
    pyproject's ``timeout = 300`` (pytest-timeout) would otherwise cover fixture set-up, and whichever test
    first needs ``kube`` pays for a cold build of the API server (~6-9 min). ``func_only`` times the test
    body alone; the fixtures bound their own waits (kube.sh timeout, the cluster's start-up timeouts).
    A test's own ``@pytest.mark.timeout`` is left alone.
    """
    mark_tier(config, items, E2E_DIR, pytest.mark.e2e)


def mark_tier(config: pytest.Config, items: list[pytest.Item], directory: Path,
              marker: pytest.MarkDecorator) -> None:
    """Give the tests under *directory* *marker*, and time their bodies only (see above)."""
    for item in items:
        if not item.path.resolve().is_relative_to(directory):
            continue
        item.add_marker(marker)
        if item.get_closest_marker("timeout") is None and config.pluginmanager.hasplugin("timeout"):
            item.add_marker(pytest.mark.timeout(func_only=True))


def _require_tools() -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if not KUBE_SH.is_file():
        missing.append(str(KUBE_SH))
    if missing:
        pytest.fail(
            "the e2e tier needs " + ", ".join(missing) + " (apt: etcd-server kubernetes-client openssl; "
            "kube.sh also needs golang-go make rsync dpkg-dev for its first build)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def kube_bin_dir(pytestconfig: pytest.Config) -> Path:
    """The directory with kube-apiserver and kube-controller-manager, built by kube.sh if not cached."""
    return build_kube(pytestconfig, "kube-apiserver", "kube-controller-manager")


def build_kube(pytestconfig: pytest.Config, *components: str) -> Path:
    """Run kube.sh for *components* (built only where missing) and return the directory holding them.

    Output capture is suspended while kube.sh runs so its progress (stderr) is visible during a cold build.
    """
    _require_tools()
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    suspended = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
    began = time.monotonic()
    with suspended:
        try:
            result = subprocess.run(
                ["bash", str(KUBE_SH), *components],
                stdout=subprocess.PIPE,
                stderr=None,  # inherited: progress goes straight to the terminal
                stdin=subprocess.DEVNULL,
                text=True,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{KUBE_SH} did not finish within {BUILD_TIMEOUT:g}s", pytrace=False)
        elapsed = time.monotonic() - began
        if elapsed > 10:
            print(f"e2e: kube.sh took {elapsed:.0f}s", file=sys.stderr)
    if result.returncode != 0:
        pytest.fail(f"{KUBE_SH} failed with exit {result.returncode} (its stderr is above)", pytrace=False)
    lines = result.stdout.strip().splitlines()
    bin_dir = Path(lines[-1]) if lines else Path()
    for binary in components:
        if not os.access(bin_dir / binary, os.X_OK):
            pytest.fail(f"{KUBE_SH} printed {result.stdout.strip()!r}, which has no {binary}", pytrace=False)
    return bin_dir


@pytest.fixture(scope="session")
def kube(kube_bin_dir: Path) -> Iterator[KubeCluster]:
    """One control plane for the whole session (start-up is several seconds); tests isolate by namespace.

    Set MUTATOR_E2E_KEEP_WORKDIR=1 to keep the work directory (logs, kubeconfig) after the session.
    """
    cluster = KubeCluster(kube_bin_dir, keep_workdir=os.environ.get("MUTATOR_E2E_KEEP_WORKDIR") == "1")
    cluster.start()
    try:
        yield cluster
    finally:
        workdir = cluster.workdir
        cluster.stop()
        if cluster.keep_workdir:
            print(f"e2e: cluster work directory kept at {workdir}", file=sys.stderr)


# --- the webhook, registered with the API server --------------------------------------------------


@dataclass
class Registered:
    """A running ``mutator serve`` that the API server calls, through the chart's rendered configuration."""

    kube: KubeCluster
    webhook: WebhookProcess
    configuration: dict[str, Any]

    def metric(self, name: str) -> float:
        return self.webhook.metric(name)


def server_side_apply(kube: KubeCluster, objects: list[dict[str, Any]]) -> None:
    """``kubectl apply --server-side``: the API server merges and validates, as GitOps tools apply."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=nonroot-mutator-e2e",
                 "-f", "-", input=yaml.safe_dump_all(objects))


def register(kube: KubeCluster, webhook: WebhookProcess, **options: Any) -> dict[str, Any]:
    """Apply what ``helm template`` renders for a webhook at the test URL: RBAC, then the webhook config."""
    objects = rendered(base_url=webhook.url, ca_pem=Path(webhook.cert).read_bytes(), **options)
    [configuration] = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    server_side_apply(kube, [namespace, *rbac_objects(objects), configuration])
    return configuration


@contextlib.contextmanager
def serving(kube: KubeCluster, config: str, **options: Any) -> Iterator[Registered]:
    """``mutator serve`` with *config*, registered (``options`` go to the configuration), then removed."""
    webhook = WebhookProcess(config=config).start()
    configuration = register(kube, webhook, **options)
    try:
        yield Registered(kube, webhook, configuration)
    finally:
        kube.kubectl("delete", "mutatingwebhookconfiguration", configuration["metadata"]["name"],
                     "--ignore-not-found")
        webhook.stop()


@pytest.fixture(scope="module")
def registered(kube: KubeCluster, registry_config: str) -> Iterator[Registered]:
    """A webhook for this test module; its configuration is removed when the module ends."""
    with serving(kube, registry_config) as registered:
        yield registered


def pod_manifest(name: str, *containers: tuple[str, str], labels: dict[str, str] | None = None,
                 **spec: Any) -> dict[str, Any]:
    """A Pod with containers given as (name, image) pairs; nothing runs it (there is no kubelet)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": n, "image": i} for n, i in containers], **spec},
    }


# --- a private registry: what pull secrets are for -------------------------------------------------

ALICE = ("alice", "alice-pw-e2e-4c1d")
PUSHER = ("pusher", "pusher-pw-e2e-8b2f")


@dataclass(frozen=True)
class Private:
    host: str
    ca_file: str
    images: dict[str, str]  # name -> reference, all needing alice's credentials


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    """A TLS registry with htpasswd auth, on loopback: its images open only to ALICE's credentials
    (the webhook's tests, through pull secrets; the report's, the same way)."""
    ca = TestCA(tmp_path_factory.mktemp("pull-ca"))
    cert, key = ca.server_cert("pull-registry")
    users = htpasswd(tmp_path_factory.mktemp("pull-htpasswd") / "htpasswd", dict([ALICE, PUSHER]))
    server = RegistryServer(tls_cert=cert, tls_key=key, ca_file=ca.cert_file,
                            auth={"htpasswd": {"realm": "e2e-pull", "path": users}}).start()
    try:
        pusher = Pusher(server.url, context=ca.client_context(), authorization=basic(*PUSHER))
        images = {name: pusher.image(f"private/{name}", "v1", user="app",
                                     layers=[layer({"etc/passwd": passwd(("app", uid, uid))})]).reference
                  for name, uid in (("shared", 1401), ("account", 1402), ("never", 1403))}
        yield Private(server.host, ca.cert_file, images)
    finally:
        server.stop()
