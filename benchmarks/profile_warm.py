"""Where the application's own time goes on a warm admission, without the HTTP/TLS stack.

    python -m benchmarks.profile_warm            # µs of CPU per admission
    python -m benchmarks.profile_warm --profile  # and the cProfile table, by own time
    python -m benchmarks.profile_warm --files    # the mutator/ files one warm admission passes through

It runs what ``/mutate/enforce`` runs between reading the body and writing it,
on the benchmark's review, both ways: a Pod seen before (a rollout's replicas:
answered from the decisions memo) and a Pod seen for the first time (decode,
target, policy, findings, evidence, respond). The resolver is a stand-in that
answers from a dict: a warm cache hit is two dictionary lookups, and the point
is to see what the rest costs. Compare the
figure with the CPU per request ``bench_admission --only warm`` prints for the
server and the no-op: the difference not shown here is the HTTP/TLS stack.

``--files`` follows one warm admission through the real server instead: the
application as ``mutator serve`` builds it (drain, JSON log lines), a real
registry on loopback, the image cached and the Pod in the memo. It lists the
``mutator/`` files entered, in call order, each run of calls into one file as
one visit: what a reader follows to see where a warm admission goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from benchmarks.bench_admission import admission_body
from mutator import config as config_module
from mutator import logs
from mutator.decide.images import ImageUser
from mutator.decide.policy import Mode
from mutator.resolve.resolver import Resolver
from mutator.serve import pipeline, server
from mutator.serve.drain import Drain
from mutator.serve.memo import Memo
from tests.support.images import Pusher, layer, passwd
from tests.support.registry import RegistryServer

IMAGE = "127.0.0.1:5000/app:named"


class _WarmResolver:
    """Answers every image as a cached named user (uid 1000): the same object each time, as a cache."""

    def __init__(self) -> None:
        self._known: dict[str, ImageUser] = {}
        self.epoch = 0

    def reusable(self, answers: object) -> bool:
        return True  # public images: what the benchmark's registry serves

    async def resolve(self, images: Iterable[str], *, deadline: float,
                      pull: object = None) -> dict[str, ImageUser]:
        return {image: self._known.get(image) or self._known.setdefault(image, ImageUser(
            image=image, reference=image, digest="sha256:" + "a" * 64, user="app", uid=1000, gid=1000))
            for image in images}


async def _admit(body: bytes, resolver: Resolver, store: Memo | None = None) -> bytes:
    outcome = await pipeline.admit(body, mode=Mode.ENFORCE, resolver=resolver, api_timeout=3600, memo=store)
    return outcome.body


async def _run(*, count: int, profile: bool) -> None:
    body = admission_body(IMAGE)
    resolver: Resolver = _WarmResolver()  # type: ignore[assignment]
    for label, store in (("a Pod seen for the first time", None), ("a Pod seen before (memo)", Memo())):
        for _ in range(count // 10):  # warm caches (lru_cache'd helpers, interned strings, the memo)
            await _admit(body, resolver, store)
        started = time.process_time()
        for _ in range(count):
            await _admit(body, resolver, store)
        print(f"{(time.process_time() - started) / count * 1e6:6.1f} µs CPU per warm admission: {label} "
              f"(application only, {len(body)} byte review)")
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(count):
                await _admit(body, resolver, store)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


Visit = tuple[str, list[str]]  # a file, and the functions entered in it in one run


def trace_files(registry: RegistryServer) -> list[Visit]:
    """The files and functions of ``mutator/`` one warm ``/mutate/enforce`` enters, in order."""
    return asyncio.run(_trace(registry, str(Path(server.__file__).resolve().parents[1]) + "/"))


async def _trace(registry: RegistryServer, root: str) -> list[Visit]:
    directory = Path(tempfile.mkdtemp(prefix="profile-warm-"))
    (directory / "config.yaml").write_text(
        f'registries:\n  "{registry.host}": {{plain_http: true}}\nwarmup: false\n')
    pushed = Pusher(registry.url).image("bench/warm", "v1", user="app",
                                       layers=[layer({"etc/passwd": passwd(("app", 1000, 1000))})])
    body = admission_body(pushed.reference)
    app = server.make_app(config_module.load(str(directory / "config.yaml")), drain=Drain())
    visits: list[Visit] = []

    def entered(frame: FrameType, event: str, _: Any) -> None:
        name = frame.f_code.co_filename
        if event == "call" and name.startswith(root):
            if not visits or visits[-1][0] != name[len(root):]:
                visits.append((name[len(root):], []))
            visits[-1][1].append(frame.f_code.co_name)

    site = TestServer(app)
    await site.start_server(access_log=None)  # as `mutator serve` runs it: no access log
    try:
        async with aiohttp.ClientSession() as session:
            url = str(site.make_url("/mutate/enforce?timeout=10s"))

            async def post() -> None:
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as reply:
                    assert reply.status == 200, await reply.text()
                    assert (await reply.json())["response"].get("patch")  # patched: a log line is written

            for _ in range(3):  # the image cached, the Pod's decision in the memo
                await post()
            sys.setprofile(entered)
            try:
                await post()
            finally:
                sys.setprofile(None)
    finally:
        await site.close()
    logs.flush()
    return visits


def _print_files(visits: list[Visit]) -> None:
    for name, functions in visits:
        print(f"  {name:<28} {' '.join(functions)}")
    print(f"{len({name for name, _ in visits})} files, {len(visits)} visits: one warm admission "
          "(a memo hit, the image cached)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="admissions per measurement")
    parser.add_argument("--profile", action="store_true", help="print the cProfile table too")
    parser.add_argument("--files", action="store_true",
                        help="list the files one warm admission passes through in the real server")
    args = parser.parse_args()
    if args.files:
        logs.setup(fmt="json")  # as `mutator serve` logs: the admission line goes through the batch
        registry = RegistryServer().start()
        try:
            _print_files(trace_files(registry))
        finally:
            registry.stop()
        return
    asyncio.run(_run(count=args.count, profile=args.profile))


if __name__ == "__main__":
    main()
