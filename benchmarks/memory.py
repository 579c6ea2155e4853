"""Memory figures, each measured in a fresh process so that nothing else shares its RSS.

    python -m benchmarks.memory cache COUNT [cluster]  # RSS before/after COUNT distinct cached images
    python -m benchmarks.memory scan CONFIG IMAGE      # RSS before, and the peak while resolving IMAGE

Both print one JSON object. ``cache`` fills the resolver's caches the way
lookups do (a tag entry and an image entry per image, realistic names and
digests, sharing strings where the resolver shares them); with ``cluster`` it
first loads what a replica that reads pull secrets loads (kubernetes-asyncio's
generated client). ``scan`` goes through the public resolver against a real
registry.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import sys

import aiohttp

from mutator import config as config_module
from mutator.decide.images import ImageUser
from mutator.resolve.registry import reference
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver, Tagged
from mutator.serve import server  # noqa: F401 - import what `mutator serve` imports, so the baseline is honest


def status(field: str) -> int:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux's clear_refs, value 5)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


async def cache(count: int, *, cluster: bool) -> dict[str, object]:
    if cluster:
        import kubernetes_asyncio  # noqa: F401 - what api_client() imports when a cluster is configured
    config = config_module.Config(cache_max_entries=count)
    async with aiohttp.ClientSession() as session:
        resolver = Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)
        gc.collect()
        before = status("VmRSS")
        for i in range(count):
            image = f"registry.internal:5000/team-{i % 97}/service-{i}:1.{i % 50}.{i % 7}"
            digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
            canonical = str(reference.parse(image))
            name = image if canonical == image else canonical  # as Resolver._fetch_tag keeps it
            resolver.tags.put(image, Tagged(digest, name))
            resolver.users.put(digest, ImageUser(image=image, reference=name, digest=digest,
                                                 user=sys.intern(f"svc{i % 13}"), uid=1000 + i % 5000,
                                                 gid=1000))
        gc.collect()
        after = status("VmRSS")
        assert len(resolver.users) == count and resolver.cached(image) is not None
    return {"images": count, "rss_before": before, "rss_after": after,
            "bytes_per_image": (after - before) / count}


async def scan(config_path: str, image: str) -> dict[str, object]:
    config = config_module.load(config_path)
    async with aiohttp.ClientSession() as session:
        resolver = Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)
        gc.collect()
        before = status("VmRSS")
        reset_peak()
        result = await resolver.lookup(image)
        peak = status("VmHWM")
    return {"rss_before": before, "rss_peak": peak, "result": result.as_json()}


def main() -> None:
    if sys.argv[1:2] == ["cache"]:
        print(json.dumps(asyncio.run(cache(int(sys.argv[2]), cluster=sys.argv[3:4] == ["cluster"]))))
    elif sys.argv[1:2] == ["scan"]:
        print(json.dumps(asyncio.run(scan(sys.argv[2], sys.argv[3]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
