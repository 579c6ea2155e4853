"""What the node tier changes on the host, and how it puts it back: cgroups, mounts, sysctls, processes.

The kubelet and containerd write outside their own directories: pod cgroups under ``--cgroup-root``,
bind and overlay mounts under their root/state directories, and the kubelet sets a few kernel sysctls at
start-up (``vm.overcommit_memory``, ``kernel.panic``, ``kernel.panic_on_oops``...). Each helper here
records or finds what was done, so the tier can undo it and a second run starts from a clean machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
# The sysctls the kubelet 1.20 sets when it starts (pkg/kubelet/cm/container_manager_linux.go).
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")


class HostError(RuntimeError):
    """The host lacks something the node needs, or left something the tier cannot undo."""


def cgroup_version() -> int:
    """2 on a unified-only host, else 1 (v1 hierarchies, with or without a unified mount beside)."""
    mounts = _mountinfo()
    return 2 if any(point == str(CGROUP_FS) and kind == "cgroup2" for point, kind in mounts) else 1


def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 per controller, the v2 tree) on this host."""
    return [Path(point) for point, kind in _mountinfo() if kind in ("cgroup", "cgroup2")]


def create_cgroup_root(name: str) -> list[Path]:
    """``/<name>`` in every hierarchy: the kubelet insists ``--cgroup-root`` exists before it starts.

    A v1 cpuset child starts with no cpus and mems, where no task may join; they are copied from the parent.
    """
    created = []
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        created.append(path)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (path / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text((hierarchy / knob).read_text())
    return created


def remove_cgroup_root(name: str, *, timeout: float = 30.0) -> None:
    """Remove ``/<name>`` and everything below it in each hierarchy, deepest first.

    Processes still in it are the node's containers, orphaned when their shim went first (a run that
    was killed): they are SIGKILLed by PID. A cgroup is removable once its tasks have exited.
    """
    deadline = time.monotonic() + timeout
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.exists():
            continue
        for procs in root.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir(directory, deadline)
        _rmdir(root, deadline)


def _rmdir(path: Path, deadline: float) -> None:
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                procs = path / "cgroup.procs"
                tasks = procs.read_text().split() if procs.exists() else []
                raise HostError(f"cannot remove cgroup {path}: {exc}; tasks left: {tasks}") from None
            time.sleep(0.1)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below *directory*, deepest (last mounted) first, so they unmount in order."""
    prefix = str(directory.resolve())
    points = [point for point, _ in _mountinfo() if point == prefix or point.startswith(prefix + "/")]
    return list(reversed(points))


def unmount_all(directory: Path) -> None:
    """Unmount everything the kubelet and containerd left at or below *directory* (overlay, shm, binds)."""
    for _ in range(3):  # a bind mounted over another shows up once per layer
        points = mounts_under(directory)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    left = mounts_under(directory)
    if left:
        raise HostError(f"still mounted after umount: {left}")


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of this mount namespace, in mount order."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
        found.append((point, fields[separator + 1]))
    return found


def read_sysctls(names: tuple[str, ...] = KUBELET_SYSCTLS) -> dict[str, str]:
    return {name: (Path("/proc/sys") / name).read_text().strip() for name in names
            if (Path("/proc/sys") / name).exists()}


def original_sysctls(record: Path) -> dict[str, str]:
    """The sysctls as they were before any kubelet of this tier ran here, kept in *record*.

    Read once and kept, so a run that starts while another run's kubelet has already changed them (or
    after a run that was killed) still restores the machine's own values.
    """
    try:
        return dict(json.loads(record.read_text()))
    except (OSError, ValueError):
        saved = read_sysctls()
        record.write_text(json.dumps(saved))
        return saved


def restore_sysctls(saved: dict[str, str]) -> None:
    """Write back what :func:`read_sysctls` saw before the kubelet changed it."""
    for name, value in saved.items():
        path = Path("/proc/sys") / name
        if path.read_text().strip() != value:
            path.write_text(value)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def kill(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after *grace* seconds; returns once *pid* is gone (or a zombie)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
        time.sleep(0.05)


def capability(name: str) -> bool:
    """Whether this process has the capability *name* (e.g. ``CAP_SYS_RESOURCE``) in its effective set."""
    bits = {"CAP_SYS_RESOURCE": 24, "CAP_SYS_ADMIN": 21}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bits[name] & 1)
    return False
