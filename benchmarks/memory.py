"""Memory figures, each measured in a fresh process so that nothing else shares its RSS.

    python -m benchmarks.memory cache COUNT [KUBECONFIG [generated]]  # RSS before/after COUNT cached images
    python -m benchmarks.memory scan CONFIG IMAGE      # RSS before, and the peak while resolving IMAGE

Both print one JSON object. ``cache`` fills the resolver's caches the way
lookups do (a tag entry and an image entry per image, realistic names and
digests, sharing strings where the resolver shares them); with a KUBECONFIG it
first starts what a replica that reads pull secrets runs (the informers over
Secrets and ServiceAccounts, listing and then watching that API server) and
keeps them running while it measures; ``generated`` also imports
kubernetes-asyncio's generated client, which the server loaded in-process
before the informers spoke REST themselves. ``scan`` goes through the public
resolver against a real registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import sys

import aiohttp

from mutator import config as config_module
from mutator.decide.images import ImageUser
from mutator.resolve.kube import pullsecrets
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


def generated_client_loaded() -> bool:
    return any(name.startswith("kubernetes_asyncio") for name in sys.modules)


async def cache(count: int, *, kubeconfig: str | None = None, generated: bool = False) -> dict[str, object]:
    if generated:
        import kubernetes_asyncio  # noqa: F401 - what api_client() imported in-process before
    secrets = await pullsecrets.from_config(enabled=True, kubeconfig=kubeconfig) if kubeconfig else None
    if secrets is not None:
        async with asyncio.timeout(60):
            assert await secrets.settle() and all(i.complete for i in secrets.informers)
    config = config_module.Config(cache_max_entries=count)
    async with contextlib.AsyncExitStack() as stack, aiohttp.ClientSession() as session:
        if secrets is not None:
            stack.push_async_callback(secrets.close)
        resolver = Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)
        gc.collect()
        before = status("VmRSS")
        for i in range(count):
            image = f"registry.internal:5000/team-{i % 97}/service-{i}:1.{i % 50}.{i % 7}"
            digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
            canonical = str(reference.parse(image))
            name = image if canonical == image else canonical  # as Resolver._fetch_tag keeps it
            resolver.tags.settle(image, Tagged(digest, name))  # kept as a lookup would keep it
            resolver.users.put(digest, ImageUser(image=image, reference=name, digest=digest,
                                                 user=sys.intern(f"svc{i % 13}"), uid=1000 + i % 5000,
                                                 gid=1000))
        gc.collect()
        after = status("VmRSS")
        assert len(resolver.users) == count and resolver.cached(image) is not None
        watching = secrets is not None and all(i.complete for i in secrets.informers)
    return {"images": count, "rss_before": before, "rss_after": after,
            "bytes_per_image": (after - before) / count, "informers_watching": watching,
            "generated_client_loaded": generated_client_loaded()}


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
        kubeconfig = sys.argv[3] if len(sys.argv) > 3 else None
        print(json.dumps(asyncio.run(cache(int(sys.argv[2]), kubeconfig=kubeconfig,
                                           generated=sys.argv[4:5] == ["generated"]))))
    elif sys.argv[1:2] == ["scan"]:
        print(json.dumps(asyncio.run(scan(sys.argv[2], sys.argv[3]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
