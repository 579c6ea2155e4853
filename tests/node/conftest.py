"""Fixtures for the node tier: the e2e control plane, plus containerd + runc + the kubelet that run Pods.

Everything under tests/node is marked ``node``. What the machine lacks makes the fixtures fail with the
exact reason, never skip: a silently skipped tier would read as green.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import KubeCluster
from tests.e2e.conftest import Registered, build_kube, kube, mark_tier, serving
from tests.e2e.webhook_config import LABEL
from tests.support.images import Pusher
from tests.support.registry import RegistryServer

from . import host, images
from .node import Node

NODE_DIR = Path(__file__).resolve().parent
TOOLS = {"containerd": "containerd", "ctr": "containerd", "runc": "runc", "gcc": "gcc",
         "umount": "mount", "iptables": "iptables"}

__all__ = ["kube"]  # the e2e tier's control plane fixture, built here with the kubelet beside it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests under tests/node as ``node``; the node's start-up stays out of their timeout."""
    mark_tier(config, items, NODE_DIR, pytest.mark.node)


def _require_host() -> None:
    problems = [f"{tool} (apt: {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not images.BUSYBOX.is_file():
        problems.append(f"{images.BUSYBOX} (apt: busybox-static)")
    if os.geteuid() != 0:
        problems.append("root: containerd and the kubelet mount filesystems and create cgroups")
    elif not host.capability("CAP_SYS_ADMIN"):
        problems.append("CAP_SYS_ADMIN: containers need mount and namespaces")
    if not host.cgroup_hierarchies():
        problems.append("a cgroup filesystem under /sys/fs/cgroup")
    if problems:
        pytest.fail("the node tier needs " + ", ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def kube_bin_dir(pytestconfig: pytest.Config) -> Path:
    """kube.sh's cache, with the kubelet built beside the API server (only if missing)."""
    _require_host()
    return build_kube(pytestconfig, "kube-apiserver", "kube-controller-manager", "kubelet")


@pytest.fixture(scope="session")
def node(kube: KubeCluster, kube_bin_dir: Path, registry: RegistryServer) -> Iterator[Node]:
    """One node for the session, registered and Ready; all of it undone at the end (node.py)."""
    started = Node(kube, kube_bin_dir, registries=(registry.host,))
    try:
        started.start()
    except (host.HostError, TimeoutError, RuntimeError) as exc:
        pytest.fail(f"the node did not start: {exc}\nlast kubelet lines:\n{started.kubelet_tail()}\n"
                    f"last containerd lines:\n{started.containerd.tail()}", pytrace=False)
    print(f"node: {started.name} Ready in {started.startup_seconds:.1f}s (cgroup v{host.cgroup_version()})",
          file=sys.stderr)
    yield started
    started.stop()


@pytest.fixture(scope="session")
def seed_images(pusher: Pusher) -> dict[str, str]:
    return {image.name: images.push(pusher, f"node/{image.name}", image.user, image.layers)
            for image in images.seeds()}


@pytest.fixture(scope="module")
def webhook(kube: KubeCluster, registry_config: str) -> Iterator[Registered]:
    """``mutator serve`` registered through the chart's rendering, for one test module."""
    with serving(kube, registry_config) as registered:
        yield registered


@pytest.fixture(scope="module")
def namespaces(node: Node, webhook: Registered) -> dict[str, str]:
    """One namespace per mode, and one without the label (the webhook never sees it)."""
    return {mode: node.namespace(mode, {LABEL: mode} if mode != "none" else {})
            for mode in ("enforce", "warn", "none")}
