"""How fast is an admission? Figures with a baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_admission [--rounds N]

Needs Debian's docker-registry (scripts/setup.sh installs it). Everything runs
on loopback: a registry with images built here, and ``mutator serve``.

Printed (medians; the machines are shared and noisy, so read the ratios):
- in-process warm decision (cache hit): decode + ``webhook.handle`` vs ``json.loads`` of the same body;
- HTTPS warm admission vs ``GET /healthz`` on the same keep-alive connection;
- cold resolve (cache empty) vs one raw manifest GET to the same registry;
- N concurrent cold admissions of one image: how many registry lookups they made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp

from mutator import admission, webhook
from mutator.config import from_mapping
from mutator.policy import Mode
from mutator.registry.client import MANIFEST_ACCEPT, RegistryClient
from mutator.resolver import Resolver
from tests.support.fixtures import review, with_images
from tests.support.images import Pusher, group, layer, passwd
from tests.support.registry import RegistryServer
from tests.support.webhook import WebhookProcess


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def line(name: str, value: float, baseline: float, unit: str = "µs") -> None:
    print(f"  {name:<44} {value:10.1f} {unit}   baseline {baseline:10.1f} {unit}   "
          f"ratio {value / baseline:6.2f}x")


async def timed(fn: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def run(rounds: int, registry: RegistryServer, images: dict[str, str], config_path: str) -> None:
    config = from_mapping({"registries": {registry.host: {"plain_http": True}}})
    document = with_images(review("pod-create-multi"), {
        "busybox:1.36": images["upper"], "node:20-alpine": images["base"], "nginx:1.25": images["base"],
    })
    body = json.dumps(document)

    async with aiohttp.ClientSession() as session:
        client = RegistryClient(session=session, registries=config.registry)
        resolver = Resolver(client=client, config=config)
        loop = asyncio.get_running_loop()

        async def decide() -> object:
            return await webhook.handle(admission.decode(body), mode=Mode.ENFORCE, resolver=resolver,
                                        deadline=loop.time() + 10)

        async def parse_only() -> object:
            return json.loads(body)

        await decide()  # warm the cache
        warm = await timed(decide, rounds)
        parse = await timed(parse_only, rounds)
        print("in-process, 3-container pod, cache warm:")
        line("decode + webhook.handle (decide+patch)", median_us(warm), median_us(parse))

        # Cold: every round with an empty cache; baseline is one bare manifest GET.
        url = f"{registry.url}/v2/{images['upper'].split('/', 1)[1].replace(':v1', '')}/manifests/v1"

        async def manifest_get() -> object:
            async with session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as response:
                return await response.read()

        cold_rounds = max(5, rounds // 20)
        for name in ("base", "upper"):
            async def cold(name: str = name) -> object:
                resolver.cache.clear()
                return await resolver.resolve([images[name]], deadline=loop.time() + 10)

            cold_samples = await timed(cold, cold_rounds)
            get_samples = await timed(manifest_get, cold_rounds)
            print(f"cold resolve of '{name}' ({cold_rounds} rounds):")
            line("resolve (manifest+config+layers)", median_us(cold_samples) / 1000,
                 median_us(get_samples) / 1000, "ms")

        # Concurrency: N admissions of one cold image share one lookup.
        resolver.cache.clear()
        lookups = 0
        original = resolver.lookup

        async def counting(image: str, **kwargs: object) -> object:
            nonlocal lookups
            lookups += 1
            return await original(image, **kwargs)

        resolver.lookup = counting  # type: ignore[method-assign]
        started = time.perf_counter()
        await asyncio.gather(*(decide() for _ in range(50)))
        elapsed = time.perf_counter() - started
        print(f"50 concurrent cold admissions (2 distinct images): {lookups} registry lookups, "
              f"{elapsed * 1000:.1f} ms in all")

    server = WebhookProcess(config=config_path).start()
    try:
        context = ssl.create_default_context(cafile=server.cert)
        connector = aiohttp.TCPConnector(ssl=context, limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def admit() -> object:
                async with session.post(f"{server.url}/mutate/enforce?timeout=10s", data=body,
                                        headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 200
                    return await response.read()

            async def health() -> object:
                async with session.get(f"{server.url}/healthz") as response:
                    return await response.read()

            await admit()
            https_warm = await timed(admit, rounds)
            https_health = await timed(health, rounds)
            print("over HTTPS (one keep-alive connection), cache warm:")
            line("POST /mutate/enforce", median_us(https_warm), median_us(https_health))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    registry = RegistryServer().start()
    try:
        pusher = Pusher(registry.url)
        base = layer({"etc/passwd": passwd(("app", 1000, 1000)), "etc/group": group(("app", 1000))})
        images = {
            "base": pusher.image("bench/base", "v1", user="app", layers=[base]).reference,
            # a 8 MiB base layer under the layer that adds the user: must not be downloaded
            "upper": pusher.image("bench/upper", "v1", user="node", layers=[
                layer({"etc/passwd": passwd()}, padding_files=64),
                layer({"etc/passwd": passwd(("node", 1001, 1001))}),
                layer({"srv/app": b"x" * 4096}),
            ]).reference,
        }
        config_path = f"{registry._dir}/mutator.yaml"
        with open(config_path, "w") as handle:
            handle.write(f'registries:\n  "{registry.host}": {{plain_http: true}}\n')
        asyncio.run(run(args.rounds, registry, images, config_path))
    finally:
        registry.stop()


if __name__ == "__main__":
    main()
