"""The node itself: the kubelet turns Ready on containerd, and a Pod from the test registry runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import host, pause, pods
from .node import Node


def test_the_kubelet_registers_a_ready_node_on_containerd(node: Node):
    stored = node.kube.api_get(f"/api/v1/nodes/{node.name}")
    info = stored["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.20.2"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6")
    ready = {c["type"]: c["status"] for c in stored["status"]["conditions"]}
    assert ready["Ready"] == "True", stored["status"]["conditions"]
    # Our own cgroup root, and containerd's sandbox image is the one built from pause.c here.
    assert all((hierarchy / node.cgroup_root).is_dir() for hierarchy in host.cgroup_hierarchies())
    listed = node.containerd.ctr("images", "list", "--quiet").stdout.split()
    assert pause.IMAGE in listed
    # The host's firewall is left alone (--make-iptables-util-chains=false).
    for table in ("filter", "nat", "mangle"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=True)
        assert "KUBE-" not in rules.stdout, rules.stdout


def test_a_pod_runs_with_a_sandbox_from_the_local_pause_image(node: Node, seed_images):
    namespace = node.namespace("plain")
    pods.create(node, namespace, pods.pod("p", seed_images["named"], node=node))
    result = pods.outcome(node, namespace, "p")
    assert result.ids is not None, f"{result.reason}: {result.message}"
    sandboxes = node.containerd.ctr("containers", "list").stdout
    assert pause.IMAGE in sandboxes
    # The sandbox got OOM score 0 (restrict_oom_score_adj), not the -998 this root may not set.
    pause_ids = [line.split()[0] for line in sandboxes.splitlines() if pause.IMAGE in line]
    scores = {Path(f"/proc/{node.containerd.process_id(i)}/oom_score_adj").read_text().strip()
              for i in pause_ids}
    assert scores and all(int(score) >= 0 for score in scores), scores
