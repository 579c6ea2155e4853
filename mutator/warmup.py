"""Warm the caches at start from the Pods already stored in opted-in namespaces.

A restarted replica must not meet a rollout cold: the images a cluster runs
today are the images its next admissions name. At start the server lists the
Pods of every namespace labelled ``nonroot-mutator/mode`` and resolves their
images in the background, a few at a time. Readiness does not wait for it: a
cold cache is slower, not wrong. Progress is ``nonroot_mutator_warmup_images``.

The listing runs in a short-lived child process (``python -m mutator.warmup``):
the Kubernetes client's model classes cost about 38 MB of RSS once imported, and
the server would otherwise carry them for its whole life to use them once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import yaml

from mutator import logs, metrics
from mutator.images import ImageUser
from mutator.resolver import Resolver

log = logging.getLogger(__name__)

MODE_LABEL = "nonroot-mutator/mode"
PAGE_SIZE = 500
LIST_TIMEOUT_SECONDS = 120.0
EXIT_NO_CLUSTER = 3
_CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")


def _missing_kubeconfig() -> str | None:
    """The kubeconfig the client would read ($KUBECONFIG, else ~/.kube/config) when it does not exist."""
    kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    return None if os.path.isfile(kubeconfig) else kubeconfig


async def _api_client() -> Any:
    """In-cluster credentials, else a kubeconfig ($KUBECONFIG or ~/.kube/config), else None."""
    from kubernetes_asyncio import client as kube_client
    from kubernetes_asyncio import config as kube_config
    from kubernetes_asyncio.config import ConfigException

    try:
        kube_config.load_incluster_config()
        return kube_client.ApiClient()
    except ConfigException:
        pass
    missing = _missing_kubeconfig()
    if missing:
        log.info("warm-up skipped: no in-cluster service account and no kubeconfig (%s does not exist)",
                 missing)
        return None
    try:
        configuration = kube_client.Configuration()
        await kube_config.load_kube_config(client_configuration=configuration)
        return kube_client.ApiClient(configuration)
    except (ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        log.info("warm-up skipped: no in-cluster service account and no usable kubeconfig (%s)", exc)
        return None


def images_of(pod: Mapping[str, Any]) -> set[str]:
    """The images of *pod* whose user an admission would look up: no effective runAsUser."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return set()
    pod_user = _run_as_user(spec)
    found = set()
    for kind in _CONTAINER_KINDS:
        for container in spec.get(kind) or ():
            if not isinstance(container, dict) or not isinstance(container.get("image"), str):
                continue
            if _run_as_user(container) is None and pod_user is None:
                found.add(container["image"])
    return found


def _run_as_user(holder: Mapping[str, Any]) -> Any:
    context = holder.get("securityContext")
    return context.get("runAsUser") if isinstance(context, dict) else None


async def _pods(api: Any, namespace: str) -> list[dict[str, Any]]:
    """Every Pod of *namespace*, page by page, as plain JSON (no model objects: far less memory)."""
    pods: list[dict[str, Any]] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        response = await api.list_namespaced_pod(namespace, **kwargs)
        page = orjson.loads(await response.read())
        pods.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return pods


async def images_in_cluster(api_client: Any) -> set[str]:
    from kubernetes_asyncio import client as kube_client

    api = kube_client.CoreV1Api(api_client)
    response = await api.list_namespace(label_selector=MODE_LABEL, _preload_content=False)
    namespaces = [item["metadata"]["name"] for item in orjson.loads(await response.read())["items"]]
    images: set[str] = set()
    for namespace in namespaces:
        for pod in await _pods(api, namespace):
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


async def list_images() -> int:
    """The child's work: print the opted-in Pods' images as a JSON list; exit 3 without a cluster."""
    api_client = await _api_client()
    if api_client is None:
        return EXIT_NO_CLUSTER
    async with api_client:
        images = await images_in_cluster(api_client)
    sys.stdout.buffer.write(orjson.dumps(sorted(images)))
    return 0


async def _images_from_child() -> list[str] | None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mutator.warmup", stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(LIST_TIMEOUT_SECONDS):
            out, _ = await child.communicate()
    except BaseException:
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode == EXIT_NO_CLUSTER:
        return None  # the child said why, in one log line
    if child.returncode != 0:
        raise RuntimeError(f"listing Pods failed (exit {child.returncode})")
    images = orjson.loads(out)
    return [image for image in images if isinstance(image, str)]


async def warm_up(resolver: Resolver, *, concurrency: int) -> None:
    """List the opted-in Pods and resolve their images; never raises (a failed warm-up costs speed only)."""
    try:
        images = await _images_from_child()
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
    logging.getLogger("kubernetes_asyncio").setLevel(logging.ERROR)  # we say why we skip, once
    sys.exit(asyncio.run(list_images()))
