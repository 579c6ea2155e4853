"""The soak script: a few seconds of it in the suite, and its growth verdict on made-up series."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.soak import FDS_MARGIN, RSS_MARGIN_BYTES, Sample, verdict

MIB = 2**20


def series(rss: list[float], fds: list[float], tasks: list[float] | None = None) -> list[Sample]:
    tasks = tasks or [20.0] * len(rss)
    return [Sample(at=i, rss=r, fds=f, lag=0.001, tasks=t, inflight=0)
            for i, (r, f, t) in enumerate(zip(rss, fds, tasks, strict=True))]


def test_a_flat_series_passes():
    flat = series([60 * MIB + (i % 3) * MIB for i in range(12)], [20 + i % 2 for i in range(12)])
    assert verdict(flat, seconds=12) == []


def test_steady_memory_growth_fails():
    growing = series([60 * MIB + i * 8 * MIB for i in range(12)], [20] * 12)
    (problem,) = verdict(growing, seconds=12)
    assert problem == "resident memory grew from 92.0 MiB to 140.0 MiB"


def test_leaking_file_descriptors_and_tasks_fail():
    leaking = series([60 * MIB] * 12, [20 + 10 * i for i in range(12)], [20 + 20 * i for i in range(12)])
    problems = verdict(leaking, seconds=12)
    assert any("open file descriptors grew" in p for p in problems)
    assert any("asyncio tasks grew" in p for p in problems)


def test_margins_are_what_the_docstring_says():
    assert RSS_MARGIN_BYTES == 24 * MIB and FDS_MARGIN == 32


@pytest.mark.registry
def test_soak_smoke():
    """Six seconds of the real thing: registry, silent registry, mutator serve, all three kinds."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--seconds", "6", "--rate", "15", "--report-every", "2",
         "--cold-images", "8", "--timeout", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak: ok: nothing grew, every answer as expected" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.lstrip().startswith("t s"))
    assert "RSS MiB" in header and "fds" in header and "lag ms" in header and "tasks" in header
    answers = next(line for line in result.stdout.splitlines() if line.startswith("answers:"))
    for kind in ("'warm'", "'cold'", "'faulty'"):
        assert kind in answers
