"""Drive an HTTPS endpoint with Debian's ``wrk`` (a Lua POST script), pinned to its own core."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def cores() -> tuple[set[int], set[int]]:
    """(server cores, load generator cores): different ones when the machine has two or more."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, {available[1]}


def pin(pid: int, cpus: set[int]) -> None:
    os.sched_setaffinity(pid, cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used: per request, the figure other work on a shared
    machine moves least (throughput and latency move with whatever else runs)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no {percentile}% latency:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, body: bytes, *, seconds: float, connections: int, cpus: set[int]) -> Load:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as directory:
        script, body_file = f"{directory}/post.lua", f"{directory}/body.json"
        with open(script, "w") as handle:
            handle.write(_LUA)
        with open(body_file, "wb") as handle:
            handle.write(body)
        command = [binary, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                   "-s", script, url]
        if shutil.which("taskset"):
            command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60,
                                env={**os.environ, "BENCH_BODY": body_file}, check=True)
    text = result.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    if rps is None:
        raise RuntimeError(f"wrk printed no throughput:\n{text}\n{result.stderr}")
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Load(float(rps.group(1)), _latency(text, "50"), _latency(text, "99"), failed)
