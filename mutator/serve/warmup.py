"""Warm the caches at start from the Pods already stored in opted-in namespaces.

A restarted replica must not meet a rollout cold: the images a cluster runs
today are the images its next admissions name. At start the server lists the
Pods of every namespace labelled ``nonroot-mutator/mode`` and resolves their
images in the background, a few at a time, each with the pull credentials of
the Pods that run it (:func:`mutator.serve.pipeline.pod_pull_context`, as an
admission reads them): a private image is then cached, and its access proved,
for the Pods that will be admitted with it. Readiness does not wait for it: a
cold cache is slower, not wrong. Progress is ``nonroot_mutator_warmup_images``.

The listing runs in a short-lived child process (``python -m mutator.serve.warmup``):
loading the cluster's configuration and holding every stored Pod's JSON at once
costs memory the server would otherwise carry for its whole life to use it once.
It prints each image with the pull contexts of the Pods that run it.
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
from mutator.decide import admission, policy
from mutator.decide.images import ImageUser
from mutator.errors import BadReview, ConfigError
from mutator.resolve.kube.child import run_module
from mutator.resolve.kube.client import KubeClient, api_client
from mutator.resolve.registry.authn.credentials import PullContext
from mutator.resolve.resolver import Resolver
from mutator.serve.pipeline import pod_pull_context

log = logging.getLogger(__name__)

MODE_LABEL = "nonroot-mutator/mode"
PAGE_SIZE = 500
LIST_TIMEOUT_SECONDS = 120.0
EXIT_NO_CLUSTER = 3


async def _connect(kubeconfig: str | None) -> KubeClient | None:
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
    """The images an admission of *pod* would look up: the containers without an effective
    runAsUser, by the admission's own rules (none for a Windows Pod, or one it could not read)."""
    spec = pod.get("spec")
    try:
        target = admission.pod_target(spec, "/spec") if isinstance(spec, Mapping) else None
    except BadReview:  # its admission would be a 400 that looks nothing up
        return set()
    return set(policy.images_to_resolve(target)) if target is not None else set()


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


# image -> the pull credentials of the Pods that run it
Wanted = dict[str, set[PullContext]]


async def lookups_in_cluster(api: KubeClient) -> Wanted:
    """The images of the Pods in opted-in namespaces, each with every Pod's pull context."""
    namespaces = await _list(api, "/api/v1/namespaces", [("labelSelector", MODE_LABEL)])
    wanted: Wanted = {}
    for namespace in namespaces:
        name = namespace["metadata"]["name"]
        for pod in await _list(api, f"/api/v1/namespaces/{urllib.parse.quote(name, safe='')}/pods", []):
            images = images_of(pod)
            if images:
                pull = pod_pull_context(pod.get("spec"), namespace=name)
                for image in images:
                    wanted.setdefault(image, set()).add(pull)
    return wanted


def encode(wanted: Mapping[str, Iterable[PullContext]]) -> bytes:
    """What the child prints: ``{image: [{namespace, pull_secrets, service_account}, ...]}``, sorted."""
    return orjson.dumps({image: sorted(pulls, key=_order) for image, pulls in sorted(wanted.items())})


def decode(out: bytes) -> Wanted:
    """The parent's reading of :func:`encode`'s output; what is not of that shape is left out."""
    found = orjson.loads(out)
    wanted: Wanted = {}
    for image, pulls in (found.items() if isinstance(found, dict) else ()):
        for pull in pulls if isinstance(pulls, list) else ():
            context = _pull_context(pull)
            if context is not None:
                wanted.setdefault(image, set()).add(context)
    return wanted


def _pull_context(data: Any) -> PullContext | None:
    if not isinstance(data, dict):
        return None
    namespace, secrets, account = data.get("namespace"), data.get("pull_secrets"), data.get("service_account")
    if not (isinstance(namespace, str) and isinstance(account, str) and isinstance(secrets, list)
            and all(isinstance(secret, str) for secret in secrets)):
        return None
    return PullContext(namespace=namespace, pull_secrets=tuple(secrets), service_account=account)


def _order(pull: PullContext) -> tuple[str, tuple[str, ...], str]:
    return pull.namespace, pull.pull_secrets, pull.service_account


async def resolve_all(resolver: Resolver, wanted: Mapping[str, Iterable[PullContext]], *,
                      concurrency: int) -> None:
    """Resolve each image of *wanted* for each of its pull contexts, at most *concurrency* images at
    once, counting progress per image: ``done`` when every Pod running it would be answered.

    The first context reads the image; each other one is screened as its admission will be (the
    access check, where it offers other credentials), so the check's answer is cached too.
    """
    metrics.WARMUP_IMAGES.labels("total").set(len(wanted))
    done, failed = metrics.WARMUP_IMAGES.labels("done"), metrics.WARMUP_IMAGES.labels("failed")
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()

    async def one(image: str, pulls: list[PullContext]) -> None:
        answered = True
        async with gate:
            for pull in pulls:
                try:
                    # the lookup ends by itself within lookup_timeout; the second is for an access check
                    deadline = loop.time() + resolver.lookup_timeout + 1
                    found = (await resolver.resolve([image], deadline=deadline, pull=pull))[image]
                except Exception:  # one image's surprise must not end the others' warm-up
                    log.exception("warm-up: resolving %s failed", image)
                    found = None
                answered = answered and isinstance(found, ImageUser)
        (done if answered else failed).inc()

    await asyncio.gather(*(one(image, sorted(wanted[image], key=_order)) for image in sorted(wanted)))


async def list_lookups(kubeconfig: str | None = None) -> int:
    """The child's work: print what :func:`encode` says of the opted-in Pods; exit 3 without a cluster."""
    api = await _connect(kubeconfig)
    if api is None:
        return EXIT_NO_CLUSTER
    async with api:
        wanted = await lookups_in_cluster(api)
    sys.stdout.buffer.write(encode(wanted))
    return 0


async def _lookups_from_child(kubeconfig: str | None) -> Wanted | None:
    code, out, _ = await run_module("mutator.serve.warmup", *([kubeconfig] if kubeconfig else []),
                                    seconds=LIST_TIMEOUT_SECONDS)
    if code == EXIT_NO_CLUSTER:
        return None  # the child said why, in one log line
    if code != 0:
        raise RuntimeError(f"listing Pods failed (exit {code})")
    return decode(out)


async def warm_up(resolver: Resolver, *, concurrency: int, kubeconfig: str | None = None) -> None:
    """List the opted-in Pods and resolve their images; never raises (a failed warm-up costs speed only).

    The cluster is the one the pull secrets are read from: *kubeconfig* (the config's key),
    else ``$KUBECONFIG``, else the in-cluster service account.
    """
    try:
        wanted = await _lookups_from_child(kubeconfig)
        if wanted is None:
            return
        log.info("warm-up: resolving %d images from Pods in opted-in namespaces", len(wanted))
        await resolve_all(resolver, wanted, concurrency=concurrency)
        log.info("warm-up: done")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("warm-up stopped: %s", exc)


if __name__ == "__main__":
    logs.setup(fmt=os.environ.get(logs.FORMAT_ENV, "text"))  # the server's format, inherited
    sys.exit(asyncio.run(list_lookups(sys.argv[1] if len(sys.argv) > 1 else None)))
