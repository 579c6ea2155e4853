"""Debian's containerd 1.6 with a config, root, state and socket of the tier's own; never the system's.

The CRI plugin is set up for this machine:

* ``restrict_oom_score_adj = true``: the machine's root lacks ``CAP_SYS_RESOURCE``, so no process may
  lower its OOM score, and the CRI gives the pause container -998. Without this every sandbox fails with
  ``runc create failed: unable to start container process: can't get final child's PID from pipe: EOF``
  (``nsexec: failed to update /proc/self/oom_score_adj: Permission denied``). With it containerd clamps
  the score to its own (0).
* Host networking only: the CNI config holds just the ``loopback`` plugin, which is enough for the runtime
  to report its network ready; every test Pod sets ``hostNetwork: true``.
* The test registry is reached over plain HTTP through a ``hosts.toml`` under ``config_path``.
* runc's state (``--root``) lives under the tier's state directory too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.support.net import wait_for

from . import host

NAMESPACE = "k8s.io"  # the CRI plugin's containerd namespace
DISABLED_PLUGINS = (
    "io.containerd.internal.v1.opt",  # would create /opt/containerd
    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
)


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string or list of strings is a TOML one


class Containerd:
    """One containerd process; ``start()``, ``import_image()``, ``process_id()``, ``stop()``."""

    def __init__(self, directory: Path, *, sandbox_image: str, registries: tuple[str, ...]) -> None:
        self.dir = directory
        self.socket = directory / "containerd.sock"
        self.root = directory / "root"
        self.state = directory / "state"
        self.log = directory / "containerd.log"
        self.sandbox_image = sandbox_image
        self.registries = registries  # HOST:PORT of plain-HTTP loopback registries
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        return "\n".join([
            "version = 2",
            f"root = {_toml(str(self.root))}",
            f"state = {_toml(str(self.state))}",
            "oom_score = 0",
            f"disabled_plugins = {_toml(list(DISABLED_PLUGINS))}",
            "[grpc]", f"  address = {_toml(str(self.socket))}",
            "[ttrpc]", '  address = ""',
            "[metrics]", '  address = ""',
            cri,
            f"  sandbox_image = {_toml(self.sandbox_image)}",
            "  restrict_oom_score_adj = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  netns_mounts_under_state_dir = true",
            f"{cri[:-1]}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"{cri[:-1]}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"{cri[:-1]}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",  # the kubelet runs the cgroupfs driver
            f"  Root = {_toml(str(self.state / 'runc'))}",
            f"{cri[:-1]}.cni]",
            '  bin_dir = "/usr/lib/cni"',
            f"  conf_dir = {_toml(str(self.dir / 'cni'))}",
            f"{cri[:-1]}.registry]",
            f"  config_path = {_toml(str(self.dir / 'certs.d'))}",
            "",
        ])

    def _write_files(self) -> None:
        cni = self.dir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-host.conflist").write_text(json.dumps(
            {"cniVersion": "0.4.0", "name": "host-only", "plugins": [{"type": "loopback"}]}))
        for registry in self.registries:
            hosts = self.dir / "certs.d" / registry
            hosts.mkdir(parents=True, exist_ok=True)
            (hosts / "hosts.toml").write_text(
                f'server = "http://{registry}"\n\n[host."http://{registry}"]\n'
                '  capabilities = ["pull", "resolve"]\n')
        (self.dir / "config.toml").write_text(self.config())

    def start(self, *, timeout: float = 60.0) -> Containerd:
        binary = shutil.which("containerd")
        if binary is None or shutil.which("runc") is None or shutil.which("ctr") is None:
            raise host.HostError("containerd, ctr and runc are needed (apt: containerd runc)")
        self._write_files()
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "--config", str(self.dir / "config.toml")], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise host.HostError(f"containerd exited with {self.process.returncode}:\n{self.tail()}")
            return self.socket.exists() and self.ctr("version", check=False).returncode == 0

        wait_for(ready, timeout=timeout, what=f"containerd on {self.socket}")
        return self

    def ctr(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise host.HostError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive))

    def task_dir(self, container_id: str) -> Path:
        return self.state / "io.containerd.runtime.v2.task" / NAMESPACE / container_id

    def process_id(self, container_id: str) -> int:
        """The host PID of a running container's first process, as its containerd shim recorded it."""
        return int((self.task_dir(container_id) / "init.pid").read_text())

    def kill_tasks(self, *, timeout: float = 30.0) -> None:
        """SIGKILL every task and delete it, so its shim exits and lets go of its mounts."""
        listed = self.ctr("tasks", "list", "--quiet", check=False)
        tasks = listed.stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        for task in tasks:
            wait_for(lambda t=task: self.ctr("tasks", "delete", t, check=False).returncode == 0
                     or t not in self.ctr("tasks", "list", "--quiet", check=False).stdout.split(),
                     timeout=timeout, what=f"task {task} deleted")

    def shim_pids(self) -> list[int]:
        """The shims serving this containerd: their command line names its socket (they write no pid file)."""
        pids = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(self.socket).encode() in argv:
                pids.append(int(cmdline.parent.name))
        return pids

    def stop(self) -> None:
        """Stop containerd, then any shim of it still running (by PID)."""
        if self.process is not None and self.process.poll() is None:
            host.kill(self.process.pid)
            self.process.wait(timeout=10)
        for shim in self.shim_pids():
            host.kill(shim)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"<no containerd log: {exc}>"
