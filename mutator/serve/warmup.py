"""Warm the caches at start from the Pods already stored in opted-in namespaces.

A restarted replica must not meet a rollout cold: the images a cluster runs
today are the images its next admissions name. At start the server lists the
Pods of every namespace labelled ``nonroot-mutator/mode`` and resolves their
images in the background, a few at a time. Readiness does not wait for it: a
cold cache is slower, not wrong. Progress is ``nonroot_mutator_warmup_images``.

The listing runs in a short-lived child process (``python -m mutator.serve.warmup``):
loading the cluster's configuration and holding every stored Pod's JSON at once
costs memory the server would otherwise carry for its whole life to use it once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from mutator import logs, metrics
from mutator.decide import policy
from mutator.decide.images import ImageUser
from mutator.errors import ConfigError
from mutator.resolve.kube.child import run_module
from mutator.resolve.kube.client import KubeClient, api_client
from mutator.resolve.resolver import Resolver

log = logging.getLogger(__name__)

MODE_LABEL = "nonroot-mutator/mode"
PAGE_SIZE = 500
LIST_TIMEOUT_SECONDS = 120.0
EXIT_NO_CLUSTER = 3
_CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")


async def _api_client(kubeconfig: str | None) -> KubeClient | None:
    """The cluster the pull secrets are read from (:mod:`mutator.resolve.kube.client`: an explicit
    kubeconfig, ``$KUBECONFIG`` or the in-cluster service account, never ``~/.kube/config``)."""
    try:
        api = await api_client(kubeconfig=kubeconfig)
    except ConfigError as exc:
        log.info("warm-up skipped: %s", exc)
        return None
    if api is None:
        log.info("warm-up skipped: no in-cluster service account, no --kubeconfig and no $KUBECONFIG")
    return api


def images_of(pod: Mapping[str, Any]) -> set[str]:
    """The images of *pod* whose user an admission would look up: no effective runAsUser.

    Read leniently (a stored Pod was valid once; what is odd here is skipped, not refused),
    with the policy's own rule for the effective setting.
    """
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return set()
    pod_sc = _security_context(spec)
    found = set()
    for kind in _CONTAINER_KINDS:
        for container in spec.get(kind) or ():
            if not isinstance(container, dict) or not isinstance(container.get("image"), str):
                continue
            if policy.effective_in(_security_context(container), pod_sc, "runAsUser") is None:
                found.add(container["image"])
    return found


def _security_context(holder: Mapping[str, Any]) -> Mapping[str, Any] | None:
    context = holder.get("securityContext")
    return context if isinstance(context, dict) else None


async def _list(api: KubeClient, path: str, query: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Every item of the list at *path*, page by page, as plain JSON (no model objects)."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page_query = [*query, ("limit", PAGE_SIZE), *([("continue", token)] if token else [])]
        async with await api.get(path, page_query, seconds=LIST_TIMEOUT_SECONDS) as response:
            response.raise_for_status()
            page = orjson.loads(await response.read())
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items


async def images_in_cluster(api: KubeClient) -> set[str]:
    namespaces = await _list(api, "/api/v1/namespaces", [("labelSelector", MODE_LABEL)])
    images: set[str] = set()
    for namespace in namespaces:
        name = urllib.parse.quote(namespace["metadata"]["name"], safe="")
        for pod in await _list(api, f"/api/v1/namespaces/{name}/pods", []):
            images |= images_of(pod)
    return images


async def resolve_all(resolver: Resolver, images: Iterable[str], *, concurrency: int) -> None:
    """Resolve *images* with at most *concurrency* lookups at once, counting progress."""
    images = sorted(images)
    metrics.WARMUP_IMAGES.labels("total").set(len(images))
    done, failed = metrics.WARMUP_IMAGES.labels("done"), metrics.WARMUP_IMAGES.labels("failed")
    gate = asyncio.Semaphore(concurrency)

    async def one(image: str) -> None:
        async with gate:
            try:
                result = resolver.cached(image) or await resolver.start(image)
            except Exception:  # one image's surprise must not end the others' warm-up
                log.exception("warm-up: resolving %s failed", image)
                result = None
        (done if isinstance(result, ImageUser) else failed).inc()

    await asyncio.gather(*(one(image) for image in images))


async def list_images(kubeconfig: str | None = None) -> int:
    """The child's work: print the opted-in Pods' images as a JSON list; exit 3 without a cluster."""
    api_client = await _api_client(kubeconfig)
    if api_client is None:
        return EXIT_NO_CLUSTER
    async with api_client:
        images = await images_in_cluster(api_client)
    sys.stdout.buffer.write(orjson.dumps(sorted(images)))
    return 0


async def _images_from_child(kubeconfig: str | None) -> list[str] | None:
    code, out, _ = await run_module("mutator.serve.warmup", *([kubeconfig] if kubeconfig else []),
                                    seconds=LIST_TIMEOUT_SECONDS)
    if code == EXIT_NO_CLUSTER:
        return None  # the child said why, in one log line
    if code != 0:
        raise RuntimeError(f"listing Pods failed (exit {code})")
    images = orjson.loads(out)
    return [image for image in images if isinstance(image, str)]


async def warm_up(resolver: Resolver, *, concurrency: int, kubeconfig: str | None = None) -> None:
    """List the opted-in Pods and resolve their images; never raises (a failed warm-up costs speed only).

    The cluster is the one the pull secrets are read from: *kubeconfig* (the config's key),
    else ``$KUBECONFIG``, else the in-cluster service account.
    """
    try:
        images = await _images_from_child(kubeconfig)
        if images is None:
            return
        log.info("warm-up: resolving %d images from Pods in opted-in namespaces", len(images))
        await resolve_all(resolver, images, concurrency=concurrency)
        log.info("warm-up: done")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("warm-up stopped: %s", exc)


if __name__ == "__main__":
    logs.setup(fmt=os.environ.get(logs.FORMAT_ENV, "text"))  # the server's format, inherited
    sys.exit(asyncio.run(list_images(sys.argv[1] if len(sys.argv) > 1 else None)))
