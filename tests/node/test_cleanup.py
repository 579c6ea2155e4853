"""A node whose run was killed before it could stop is undone by the next run: no process, mount, cgroup."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.cluster import KubeCluster

from . import host, pods
from .node import OWNER, Node, sweep_stale


def test_the_next_run_undoes_a_node_whose_run_was_killed(kube: KubeCluster, kube_bin_dir: Path, registry,
                                                        node: Node, seed_images):
    crashed = Node(kube, kube_bin_dir, registries=(registry.host,)).start()
    try:
        namespace = crashed.namespace("crashed")
        pods.create(crashed, namespace, pods.pod("p", seed_images["named"], node=crashed))
        assert pods.outcome(crashed, namespace, "p").uid == 1201
        pids = [*json.loads((crashed.dir / OWNER).read_text())["pids"], *crashed.containerd.shim_pids()]
        assert host.mounts_under(crashed.dir) and len(pids) >= 3
        # As if the session had been killed: its owner PID is gone and stop() never ran.
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        record = json.loads((crashed.dir / OWNER).read_text()) | {"owner": int(gone.stdout)}
        (crashed.dir / OWNER).write_text(json.dumps(record))
        sweep_stale()
        assert not [pid for pid in pids if host.alive(pid)]
        assert not crashed.dir.exists()
        assert not [h for h in host.cgroup_hierarchies() if (h / crashed.cgroup_root).exists()]
        assert not list(Path("/var/log/pods").glob(f"*-{crashed.token}-*"))
        # The session's own node is another owner's, still alive: left alone.
        assert node.dir.exists() and host.mounts_under(node.dir)
    finally:
        crashed.stop()  # reaps its children; undoes everything if the sweep failed
        kube.kubectl("delete", "node", crashed.name, "--ignore-not-found")
