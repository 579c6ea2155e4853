"""Where the application's own time goes on a warm admission, without the HTTP/TLS stack.

    python -m benchmarks.profile_warm            # µs of CPU per admission
    python -m benchmarks.profile_warm --profile  # and the cProfile table, by own time

It runs what ``/mutate/enforce`` runs between reading the body and writing it,
on the benchmark's review, both ways: a Pod seen before (a rollout's replicas:
answered from the decisions memo) and a Pod seen for the first time (decode,
target, policy, findings, evidence, respond). The resolver is a stand-in that
answers from a dict: a warm cache hit is two dictionary lookups, and the point
is to see what the rest costs. Compare the
figure with the CPU per request ``bench_admission --only warm`` prints for the
server and the no-op: the difference not shown here is the HTTP/TLS stack.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Iterable

import orjson

from benchmarks.bench_admission import admission_body
from mutator.decide.images import ImageUser
from mutator.decide.policy import Mode
from mutator.resolve.resolver import Resolver
from mutator.serve import pipeline as webhook
from mutator.serve.memo import Memo

IMAGE = "127.0.0.1:5000/app:named"


class _WarmResolver:
    """Answers every image as a cached named user (uid 1000): the same object each time, as a cache."""

    def __init__(self) -> None:
        self._known: dict[str, ImageUser] = {}

    async def resolve(self, images: Iterable[str], *, deadline: float,
                      pull: object = None) -> dict[str, ImageUser]:
        return {image: self._known.get(image) or self._known.setdefault(image, ImageUser(
            image=image, reference=image, digest="sha256:" + "a" * 64, user="app", uid=1000, gid=1000))
            for image in images}


async def _admit(body: bytes, resolver: Resolver, deadline: float, store: Memo | None = None) -> bytes:
    outcome = await webhook.admit(body, mode=Mode.ENFORCE, resolver=resolver, deadline=deadline, memo=store)
    return orjson.dumps(outcome.response)


async def _run(*, count: int, profile: bool) -> None:
    body = admission_body(IMAGE)
    resolver: Resolver = _WarmResolver()  # type: ignore[assignment]
    deadline = asyncio.get_running_loop().time() + 3600
    for label, store in (("a Pod seen for the first time", None), ("a Pod seen before (memo)", Memo())):
        for _ in range(count // 10):  # warm caches (lru_cache'd helpers, interned strings, the memo)
            await _admit(body, resolver, deadline, store)
        started = time.process_time()
        for _ in range(count):
            await _admit(body, resolver, deadline, store)
        print(f"{(time.process_time() - started) / count * 1e6:6.1f} µs CPU per warm admission: {label} "
              f"(application only, {len(body)} byte review)")
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(count):
                await _admit(body, resolver, deadline, store)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="admissions per measurement")
    parser.add_argument("--profile", action="store_true", help="print the cProfile table too")
    args = parser.parse_args()
    asyncio.run(_run(count=args.count, profile=args.profile))


if __name__ == "__main__":
    main()
