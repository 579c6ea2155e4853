"""Soak: a steady mix of warm, cold and faulty admissions for a bounded time; nothing may grow.

    .venv/bin/python -m benchmarks.soak [--seconds 120] [--rate 20] [--report-every 5]

Loopback only: it starts Debian's ``docker-registry`` with images built here, a
*silent* registry (accepts connections, never answers) for the faulty images,
and ``mutator serve``. It then posts AdmissionReviews at a steady rate:

- warm: a few images, answered from the cache;
- cold: a pool of distinct images, each looked up in the registry (the cache's
  TTL is shorter than one round of the pool, so every round is cold again);
- faulty: images on the silent registry, refused with a "temporary" message at
  the admission deadline.

Every few seconds it prints, from the server's ``/metrics``: resident memory,
open file descriptors, event-loop lag, asyncio tasks alive, admissions in flight,
plus this client's answers per second, latency and error count.

Exit status: 0 when every answer was the expected one and, after the first third
of the run (warm-up), resident memory, file descriptors and tasks stayed within
a fixed margin of where they were; 1 otherwise, saying which grew.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import random
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.fixtures import review
from tests.support.images import Pusher, group, layer, passwd
from tests.support.registry import RegistryServer
from tests.support.webhook import WebhookProcess

# Growth allowed between the end of warm-up and the end of the run.
RSS_MARGIN_BYTES = 24 * 1024 * 1024
RSS_MARGIN_RATIO = 0.20
FDS_MARGIN = 32
TASKS_MARGIN = 64
GAUGES = {
    "rss": "process_resident_memory_bytes",
    "fds": "process_open_fds",
    "lag": "nonroot_mutator_event_loop_lag_seconds",
    "tasks": "nonroot_mutator_asyncio_tasks",
    "inflight": "nonroot_mutator_inflight_admissions",
}


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds since the load started
    rss: float
    fds: float
    lag: float
    tasks: float
    inflight: float


def verdict(samples: list[Sample], *, seconds: float) -> list[str]:
    """What grew without bound: compares the end of the run with the end of its warm-up third."""
    settled = [s for s in samples if s.at >= seconds / 3]
    if len(settled) < 2:
        return ["too few samples after warm-up to judge growth"]
    base, tail = settled[0], settled[-3:]
    end = {key: statistics.median(getattr(s, key) for s in tail) for key in ("rss", "fds", "tasks")}
    problems = []
    rss_limit = base.rss + max(RSS_MARGIN_BYTES, base.rss * RSS_MARGIN_RATIO)
    if end["rss"] > rss_limit:
        problems.append(f"resident memory grew from {base.rss / 2**20:.1f} MiB "
                        f"to {end['rss'] / 2**20:.1f} MiB")
    if end["fds"] > base.fds + FDS_MARGIN:
        problems.append(f"open file descriptors grew from {base.fds:.0f} to {end['fds']:.0f}")
    if end["tasks"] > base.tasks + TASKS_MARGIN:
        problems.append(f"asyncio tasks grew from {base.tasks:.0f} to {end['tasks']:.0f}")
    return problems


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        values[name] = values.get(name, 0.0) + float(value)
    return values


@dataclass
class Tally:
    answers: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    window: list[float] = field(default_factory=list)


class SilentRegistry:
    """Accepts TCP connections and never answers; closes each when its peer does."""

    def __init__(self) -> None:
        self.open = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def build_images(pusher: Pusher, cold: int) -> tuple[list[str], list[str]]:
    base = layer({"etc/passwd": passwd(("app", 1000, 1000)), "etc/group": group(("app", 1000))})
    warm = [pusher.image(f"soak/warm{i}", "v1", user="app", layers=[base]).reference for i in range(3)]
    pool = [pusher.image(f"soak/cold{i}", "v1", user="app", layers=[base]).reference for i in range(cold)]
    return warm, pool


async def admit(session: aiohttp.ClientSession, url: str, template: dict[str, Any], kind: str, image: str,
                tally: Tally, admission_timeout: float) -> None:
    document = copy.deepcopy(template)
    document["request"]["uid"] = str(uuid.uuid4())
    document["request"]["object"]["spec"]["containers"][0]["image"] = image
    started = time.perf_counter()
    try:
        async with session.post(f"{url}/mutate/enforce?timeout={admission_timeout:g}s", json=document,
                                timeout=aiohttp.ClientTimeout(total=admission_timeout + 5)) as reply:
            body = await reply.json(content_type=None)
            status = reply.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        tally.errors[f"{kind}: {type(exc).__name__}"] += 1
        return
    elapsed = time.perf_counter() - started
    tally.latency[kind].append(elapsed)
    tally.window.append(elapsed)
    response = body.get("response") if isinstance(body, dict) else None
    if status != 200 or not isinstance(response, dict) or response.get("uid") != document["request"]["uid"]:
        tally.errors[f"{kind}: HTTP {status}"] += 1
    elif kind == "faulty":
        message = (response.get("status") or {}).get("message", "")
        ok = response.get("allowed") is False and "temporary" in message
        tally.answers[kind] += 1
        if not ok:
            tally.errors["faulty: not refused as temporary"] += 1
    elif response.get("allowed") is True and response.get("patch"):
        tally.answers[kind] += 1
    else:
        tally.errors[f"{kind}: not patched"] += 1


async def sample(session: aiohttp.ClientSession, url: str, at: float) -> Sample:
    async with session.get(f"{url}/metrics") as reply:
        values = parse_metrics(await reply.text())
    return Sample(at, *(values.get(GAUGES[key], float("nan"))
                        for key in ("rss", "fds", "lag", "tasks", "inflight")))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(args: argparse.Namespace, server: WebhookProcess, warm: list[str], pool: list[str],
               silent: str) -> tuple[list[Sample], Tally]:
    template = review("pod-create-kubectl-run")
    context = ssl.create_default_context(cafile=server.cert)
    tally = Tally()
    samples: list[Sample] = []
    chooser = random.Random(args.seed)
    kinds = ["warm"] * args.warm + ["cold"] * args.cold + ["faulty"] * args.faulty
    faulty = [f"{silent}/faulty/image{i}:v1" for i in range(10)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=200)) as session:
        pending: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_report = args.report_every
        sent = 0
        cold_index = 0
        print(f"{'t s':>6} {'sent':>6} {'ok/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'RSS MiB':>8} {'fds':>5} "
              f"{'lag ms':>7} {'tasks':>6} {'inflt':>6} {'errors':>6}", flush=True)
        answered_before = 0
        while (now := loop.time() - start) < args.seconds:
            due = int(now * args.rate) + 1
            while sent < due:
                kind = chooser.choice(kinds)
                if kind == "warm":
                    image = chooser.choice(warm)
                elif kind == "cold":
                    image, cold_index = pool[cold_index % len(pool)], cold_index + 1
                else:
                    image = chooser.choice(faulty)
                task = asyncio.create_task(admit(session, server.url, template, kind, image, tally,
                                                 args.timeout))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            if now >= next_report:
                point = await sample(session, server.url, now)
                samples.append(point)
                answered = sum(tally.answers.values())
                rate = (answered - answered_before) / args.report_every
                answered_before = answered
                print(f"{now:6.0f} {sent:6d} {rate:6.1f} {percentile(tally.window, 0.5) * 1000:7.1f} "
                      f"{percentile(tally.window, 0.99) * 1000:7.1f} {point.rss / 2**20:8.1f} "
                      f"{point.fds:5.0f} "
                      f"{point.lag * 1000:7.1f} {point.tasks:6.0f} {point.inflight:6.0f} "
                      f"{sum(tally.errors.values()):6d}", flush=True)
                tally.window.clear()
                next_report += args.report_every
            await asyncio.sleep(min(1 / args.rate, 0.05))
        if pending:
            await asyncio.wait(pending, timeout=args.timeout + 10)
        samples.append(await sample(session, server.url, loop.time() - start))
    return samples, tally


def summary(samples: list[Sample], tally: Tally, args: argparse.Namespace) -> list[str]:
    print("\nanswers:", dict(tally.answers), " errors:", dict(tally.errors) or 0)
    for kind, values in sorted(tally.latency.items()):
        print(f"  {kind:<7} n={len(values):<6} p50={percentile(values, 0.5) * 1000:7.1f} ms  "
              f"p99={percentile(values, 0.99) * 1000:7.1f} ms  max={max(values) * 1000:7.1f} ms")
    rss = [s.rss for s in samples]
    print(f"  RSS {rss[0] / 2**20:.1f} → {rss[-1] / 2**20:.1f} MiB (max {max(rss) / 2**20:.1f}); "
          f"fds {samples[0].fds:.0f} → {samples[-1].fds:.0f} (max {max(s.fds for s in samples):.0f}); "
          f"loop lag max {max(s.lag for s in samples) * 1000:.1f} ms; "
          f"tasks {samples[0].tasks:.0f} → {samples[-1].tasks:.0f} (max {max(s.tasks for s in samples):.0f})")
    problems = verdict(samples, seconds=args.seconds)
    if tally.errors:
        problems.append(f"{sum(tally.errors.values())} unexpected answers: {dict(tally.errors)}")
    if not tally.answers:
        problems.append("no admission was answered")
    return problems


async def run(args: argparse.Namespace) -> int:
    registry = RegistryServer().start()
    silent_registry = SilentRegistry()
    server: WebhookProcess | None = None
    problems = ["the soak did not complete"]
    try:
        warm, pool = build_images(Pusher(registry.url), args.cold_images)
        silent = await silent_registry.start()
        cold_rate = args.rate * args.cold / (args.warm + args.cold + args.faulty)
        # The pool comes round again after len(pool)/cold_rate seconds: expire entries before that.
        ttl = max(1.0, 0.7 * len(pool) / max(cold_rate, 0.1))
        config = Path(tempfile.mkdtemp(prefix="soak-")) / "config.yaml"
        config.write_text(json.dumps({
            "registries": {registry.host: {"plain_http": True}, silent: {"plain_http": True}},
            "cache_ttl_seconds": ttl, "cache_max_entries": max(10, len(pool) // 2),
            "lookup_timeout_seconds": args.timeout * 2,
        }))
        server = await asyncio.to_thread(WebhookProcess(config=str(config)).start)
        print(f"soak: {args.seconds:g} s at {args.rate:g}/s (warm:cold:faulty = {args.warm}:{args.cold}:"
              f"{args.faulty}), {len(pool)} cold images, cache TTL {ttl:.1f} s, admission timeout "
              f"{args.timeout:g} s; webhook {server.url}", flush=True)
        samples, tally = await load(args, server, warm, pool, silent)
        problems = summary(samples, tally, args)
    finally:
        if server is not None:
            code = await asyncio.to_thread(server.stop)
            if code != 0:
                print(f"soak: mutator serve exited {code}; log {server.log}", file=sys.stderr)
        await silent_registry.stop()
        registry.stop()
    for problem in problems:
        print(f"soak: FAIL: {problem}", file=sys.stderr)
    if not problems:
        print("soak: ok: nothing grew, every answer as expected")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="load duration (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=20, help="admissions per second (default: %(default)s)")
    parser.add_argument("--report-every", type=float, default=5, help="seconds (default: %(default)s)")
    parser.add_argument("--cold-images", type=int, default=60, help="cold pool size (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=2, help="admission ?timeout= (default: %(default)s)")
    parser.add_argument("--warm", type=int, default=7, help="weight of warm ones (default: %(default)s)")
    parser.add_argument("--cold", type=int, default=2, help="weight of cold ones (default: %(default)s)")
    parser.add_argument("--faulty", type=int, default=1, help="weight of faulty ones (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
