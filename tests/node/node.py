"""A real node on loopback: containerd + runc, and the kubelet v1.20.2 registered with a KubeCluster.

The kubelet runs ``--container-runtime=remote`` on the tier's containerd socket, with the cgroupfs driver
under a cgroup root of its own, ``--fail-swap-on=false``, its HTTPS server on 127.0.0.1 only, and its
root directory inside the tier's work directory. ``--oom-score-adj=0``: the default -999 cannot be set
without ``CAP_SYS_RESOURCE`` (the kubelet only warns; containerd's ``restrict_oom_score_adj`` is what lets
the sandboxes start). Pods are bound with ``spec.nodeName``: there is no scheduler.

``stop()`` undoes everything: the Pods' processes, containerd's shims, the mounts under the work directory,
the cgroups, the sysctls the kubelet changed, the Pod log directories it wrote under /var/log, and the
work directory itself. A run that was killed before it could do so leaves ``owner.json`` in its work
directory; the next run finds it (its owner PID gone) and undoes that run's leftovers first.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.cluster import KubeCluster
from tests.support.net import free_ports, wait_for

from . import host, pause
from .containerd import Containerd

POD_LOGS = Path("/var/log/pods")  # fixed in the 1.20 kubelet
CONTAINER_LOGS = Path("/var/log/containers")
# Fixed too, whatever --root-dir says: the device plugin registration socket. No device plugin runs here.
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.6's shims put their sockets there, fixed as well
# Keep evictions and image GC out of the way of a busy shared disk.
EVICTION_HARD = "memory.available<1Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%"


class Node:
    """containerd + kubelet for *kube*, pulling plain HTTP from *registries* (HOST:PORT)."""

    def __init__(self, kube: KubeCluster, bin_dir: Path, *, registries: tuple[str, ...],
                 ready_timeout: float = 120.0) -> None:
        self.kube = kube
        self.bin_dir = bin_dir
        self.token = secrets.token_hex(3)
        self.name = f"node-{self.token}"
        self.cgroup_root = f"nonroot-mutator-{self.token}"
        self.dir = Path(tempfile.mkdtemp(prefix="nonroot-mutator-node-"))
        self.containerd = Containerd(self.dir / "containerd", sandbox_image=pause.IMAGE,
                                     registries=registries)
        self.kubelet_dir = self.dir / "kubelet"
        self.kubelet_log = self.dir / "kubelet.log"
        self.ready_timeout = ready_timeout
        self.startup_seconds: float | None = None
        self._kubelet: subprocess.Popen[bytes] | None = None
        self._sysctls: dict[str, str] = {}

    # ------------------------------------------------------------------------------- lifecycle

    def start(self) -> Node:
        began = time.monotonic()
        sweep_stale()
        try:
            self.containerd.start()
            self._record()
            self.containerd.import_image(pause.archive(self.bin_dir.parent))
            self._start_kubelet()
            wait_for(self._ready, timeout=self.ready_timeout, what=f"node {self.name} Ready",
                     retry_on=(OSError,))
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _start_kubelet(self) -> None:
        host.create_cgroup_root(self.cgroup_root)
        self._sysctls = host.original_sysctls(self.bin_dir.parent / "node-sysctls.json")
        port, healthz = free_ports(2)
        argv = [
            str(self.bin_dir / "kubelet"),
            f"--kubeconfig={self.kube.kubeconfig}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.containerd.socket}",
            "--cgroup-driver=cgroupfs",
            f"--cgroup-root=/{self.cgroup_root}",
            "--fail-swap-on=false",
            "--oom-score-adj=0",
            f"--root-dir={self.kubelet_dir}",
            f"--cert-dir={self.kubelet_dir / 'pki'}",
            f"--volume-plugin-dir={self.kubelet_dir / 'volume-plugins'}",
            "--address=127.0.0.1", f"--port={port}", "--read-only-port=0",
            "--healthz-bind-address=127.0.0.1", f"--healthz-port={healthz}",
            f"--hostname-override={self.name}",
            f"--pod-infra-container-image={pause.IMAGE}",
            f"--eviction-hard={EVICTION_HARD}",
            "--image-gc-high-threshold=100", "--image-gc-low-threshold=99",
            "--node-status-update-frequency=2s",
            # No KUBE-* chains in the host's iptables: host-networked Pods and no Services need none.
            "--make-iptables-util-chains=false",
            "--v=2",
        ]
        with self.kubelet_log.open("wb") as out:
            self._kubelet = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        self._record()

    def _record(self) -> None:
        """What a later run needs to undo this one if it is killed before ``stop()``."""
        pids = [p.pid for p in (self._kubelet, self.containerd.process) if p is not None]
        (self.dir / OWNER).write_text(json.dumps({
            "owner": os.getpid(), "pids": pids, "cgroup_root": self.cgroup_root, "token": self.token,
            "sysctls": self._sysctls, "socket": str(self.containerd.socket)}))

    def _ready(self) -> bool:
        if self._kubelet is not None and self._kubelet.poll() is not None:
            code = self._kubelet.returncode
            raise host.HostError(f"the kubelet exited with {code}:\n{self.kubelet_tail()}")
        node = self.kube.api_get(f"/api/v1/nodes/{self.name}")
        conditions = {c["type"]: c for c in (node or {}).get("status", {}).get("conditions", [])}
        return conditions.get("Ready", {}).get("status") == "True"

    def stop(self) -> None:
        """Stop the kubelet and containerd and undo what they did on the host; safe to call twice."""
        if self._kubelet is not None:
            if self._kubelet.poll() is None:
                host.kill(self._kubelet.pid)
            self._kubelet.wait(timeout=10)
            self._kubelet = None
        if self.containerd.process is not None and self.containerd.process.poll() is None:
            self.containerd.kill_tasks()
        self.containerd.stop()
        _undo(self.dir, self.cgroup_root, self._sysctls, self.token)

    # ------------------------------------------------------------------------------- for the tests

    def namespace(self, purpose: str, labels: dict[str, str] | None = None) -> str:
        """A fresh namespace whose name carries this node's token (so its Pod logs are found at stop)."""
        name = f"{purpose}-{self.token}-{secrets.token_hex(2)}"
        self.kube.create_namespace(name, labels or {})
        return name

    def process_ids(self, container_id: str) -> dict[str, list[int]]:
        """``Uid:``, ``Gid:`` and ``Groups:`` of the container's process, read from the kernel."""
        pid = self.containerd.process_id(container_id.removeprefix("containerd://"))
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {key: [int(v) for v in fields[key].split()] for key in ("Uid", "Gid", "Groups")}

    def kubelet_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.kubelet_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"<no kubelet log: {exc}>"


OWNER = "owner.json"


def _undo(directory: Path, cgroup_root: str, sysctls: dict[str, str], token: str) -> None:
    """Mounts, cgroups, sysctls and Pod logs of one node, then its directory; raises if any is left."""
    problems: list[str] = []

    def pod_logs() -> None:  # /var/log/pods/<namespace>_<pod>_<uid>: our namespaces all carry the token
        for log_dir in POD_LOGS.glob(f"*-{token}-*_*"):
            shutil.rmtree(log_dir, ignore_errors=True)
        for link in CONTAINER_LOGS.glob(f"*_*-{token}-*_*.log"):
            link.unlink(missing_ok=True)
        for name in ("kubelet.sock", "DEPRECATION"):
            (DEVICE_PLUGINS / name).unlink(missing_ok=True)
        for empty in (DEVICE_PLUGINS, DEVICE_PLUGINS.parent, POD_LOGS, CONTAINER_LOGS, SHIM_SOCKETS,
                      SHIM_SOCKETS.parent):
            with contextlib.suppress(OSError):  # another session's kubelet may have put something there
                empty.rmdir()

    for step in (lambda: host.unmount_all(directory), lambda: host.remove_cgroup_root(cgroup_root),
                 lambda: host.restore_sysctls(sysctls), pod_logs):
        try:
            step()
        except (OSError, host.HostError) as exc:
            problems.append(str(exc))
    if not host.mounts_under(directory):
        shutil.rmtree(directory, ignore_errors=True)
    if problems:
        raise host.HostError("the node left something behind: " + "; ".join(problems))


def sweep_stale() -> None:
    """Undo the nodes of earlier runs that were killed before their ``stop()`` (their owner PID is gone)."""
    for record in Path(tempfile.gettempdir()).glob(f"nonroot-mutator-node-*/{OWNER}"):
        try:
            left = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if host.alive(left["owner"]):
            continue  # another session's node, still in use
        directory = record.parent
        for pid in left["pids"]:
            try:
                mine = str(directory).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if mine:  # the PID still runs our kubelet or containerd, not a recycled one
                host.kill(pid)
        stale = Containerd(directory / "containerd", sandbox_image=pause.IMAGE, registries=())
        for shim in stale.shim_pids():
            host.kill(shim)
        _undo(directory, left["cgroup_root"], left["sysctls"], left["token"])
