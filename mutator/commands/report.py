"""``mutator report``: every Pod (or workload) of a cluster as an auditor needs to see it.

Reads the cluster's REST endpoints with the settings kubernetes-asyncio loads
(kubeconfig, ``--context`` or in cluster), resolves every image with the same
resolver and config as the server, and with the same credentials its Pods pull with: their own
``imagePullSecrets``, else their ServiceAccount's (read through that same
client, unless ``pull_secrets: false``), then the node-wide sources. Each
container gets a verdict:

- ``fine``: a numeric non-root user, set in the manifest or by the image;
- ``patched``: its ``runAsUser`` was set by us (the Pod's ``run-as`` annotation says so);
- ``named-user``: the image names its user and nothing set a number: it would fail ``runAsNonRoot``;
- ``root``: it runs as root;
- ``unresolvable``: the image or its user could not be read.

Exits 1 when anything runs as root, so it can gate a pipeline; 2 when the
cluster cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import aiohttp

from mutator.commands import report_render
from mutator.commands.inventory import Scan, assess
from mutator.config import Config
from mutator.decide import workloads
from mutator.decide.images import Resolution
from mutator.errors import BadReview, ClusterUnreachable, ConfigError
from mutator.resolve.kube import pullsecrets
from mutator.resolve.kube.client import KubeClient, load_settings
from mutator.resolve.registry.authn.credentials import PullContext
from mutator.resolve.resolver import Resolver
from mutator.resolve.standalone import with_resolver
from mutator.serve.pipeline import pod_pull_context

LABEL = "nonroot-mutator/mode"
# kind → list path (the namespace goes before the last segment); CronJob is batch/v1beta1 before 1.21
KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("/apis/apps/v1/deployments",),
    "StatefulSet": ("/apis/apps/v1/statefulsets",),
    "DaemonSet": ("/apis/apps/v1/daemonsets",),
    "ReplicaSet": ("/apis/apps/v1/replicasets",),
    "ReplicationController": ("/api/v1/replicationcontrollers",),
    "Job": ("/apis/batch/v1/jobs",),
    "CronJob": ("/apis/batch/v1/cronjobs", "/apis/batch/v1beta1/cronjobs"),
    "Pod": ("/api/v1/pods",),
}
PAGE = 500
REQUEST_TIMEOUT_SECONDS = 60.0  # one page from the API server; a hung server must not hang a pipeline
EXIT_OK, EXIT_ROOT, EXIT_ERROR = 0, 1, 2


# --- reading the cluster ------------------------------------------------------------------------


def missing_kubeconfig(path: str | None, *, flag: str) -> None:
    """Raise when the kubeconfig that would be read (*path*, else $KUBECONFIG, else
    ~/.kube/config) does not exist: one line naming the file, not the client's own two."""
    if path:
        where = f"{flag} {path}"
    elif os.environ.get("KUBECONFIG"):
        path = os.environ["KUBECONFIG"].split(os.pathsep)[0]
        where = f"$KUBECONFIG {path}"
    else:
        path = os.path.expanduser("~/.kube/config")
        where = f"no --kubeconfig, no $KUBECONFIG, and no {path}"
        if not os.path.isfile(path):
            raise ClusterUnreachable(where)
        return
    if not os.path.isfile(path):
        raise ClusterUnreachable(f"{where}: no such file")


async def connect(*, kubeconfig: str | None, context: str | None, in_cluster: bool) -> tuple[KubeClient, str]:
    """An API client and the context's name (``in-cluster`` inside a Pod)."""
    if not in_cluster:
        missing_kubeconfig(kubeconfig, flag="--kubeconfig")
    args = ["--in-cluster"] if in_cluster else [
        *(["--kubeconfig", kubeconfig] if kubeconfig else []), *(["--context", context] if context else [])]
    try:
        settings = await load_settings(*args)
    except ConfigError as exc:
        raise ClusterUnreachable(f"cannot load the cluster's configuration: {exc}") from None
    return KubeClient(settings), settings.context


async def _get(api: KubeClient, path: str, query: list[tuple[str, str]]) -> tuple[int, Any]:
    try:
        async with await api.get(path, query, seconds=REQUEST_TIMEOUT_SECONDS) as response:
            body = await response.read()
            return response.status, json.loads(body) if body else None
    except TimeoutError:
        raise ClusterUnreachable(f"GET {path}: no answer within {REQUEST_TIMEOUT_SECONDS:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ClusterUnreachable(f"GET {path}: {exc}") from None


async def list_objects(api: KubeClient, path: str) -> list[dict[str, Any]] | None:
    """Every item at *path*, page by page; ``None`` when the API server does not serve it (404)."""
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        query = [("limit", str(PAGE))] + ([("continue", token)] if token else [])
        status, body = await _get(api, path, query)
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else body
            raise ClusterUnreachable(f"GET {path}: HTTP {status}: {message}")
        items.extend(i for i in body.get("items") or [] if isinstance(i, dict))
        token = (body.get("metadata") or {}).get("continue") or ""
        if not token:
            return items


def _namespaced(path: str, namespace: str | None) -> str:
    if not namespace:
        return path
    head, _, resource = path.rpartition("/")
    return f"{head}/namespaces/{namespace}/{resource}"


async def collect(api: KubeClient, *, by: str,
                  namespaces: Sequence[str]) -> tuple[dict[str, str], list[tuple[str, dict[str, Any]]]]:
    """The modes of the namespaces, and the (kind, object) pairs to report on."""
    listed = await list_objects(api, "/api/v1/namespaces") or []
    modes = {(n.get("metadata") or {}).get("name", ""): ((n.get("metadata") or {}).get("labels") or {})
             .get(LABEL, "") for n in listed}
    kinds = list(KINDS) if by == "workload" else ["Pod"]
    found: list[tuple[str, dict[str, Any]]] = []
    for kind in kinds:
        for namespace in namespaces or [None]:
            for path in KINDS[kind]:
                items = await list_objects(api, _namespaced(path, namespace))
                if items is not None:
                    found.extend((kind, item) for item in items if by == "pod" or _top_level(item))
                    break
    return modes, found


def _top_level(obj: Mapping[str, Any]) -> bool:
    """With ``--by workload``, what a controller we also list made is reported through that controller."""
    owners = (obj.get("metadata") or {}).get("ownerReferences") or []
    return not any(o.get("controller") and o.get("kind") in KINDS for o in owners if isinstance(o, dict))


Lookup = tuple[str, PullContext | None]  # an image, and whose pull credentials read it (None: the node's)


async def _resolve(resolver: Resolver, lookups: Sequence[Lookup], *,
                   lookup_seconds: float, progress: TextIO | None) -> dict[Lookup, Resolution]:
    """Each (image, pull context) once, keyed by both, all at once: a private image one namespace's
    secret can read is answered there only. The resolver reads each image once for every context
    offering the same credentials, hands a refusal only to those offering the credentials refused,
    and its access gate screens what was read with other credentials."""
    results: dict[Lookup, Resolution] = {}

    async def one(image: str, pull: PullContext | None) -> None:
        deadline = asyncio.get_running_loop().time() + lookup_seconds
        results[(image, pull)] = (await resolver.resolve([image], deadline=deadline, pull=pull))[image]
        if progress is not None:
            progress.write(f"\rresolving images: {len(results)}/{len(lookups)}")
            progress.flush()

    await asyncio.gather(*(one(image, pull) for image, pull in lookups))
    if progress is not None and lookups:
        progress.write("\n")
    return results


async def scan(resolver: Resolver, collected: tuple[dict[str, str], list[tuple[str, dict[str, Any]]]], *,
               scan_: Scan, lookup_seconds: float, progress: TextIO | None,
               pull_secrets: pullsecrets.PullSecrets | None) -> Scan:
    """Resolve every image of what :func:`collect` returned (*collected*) with the pull
    credentials of the objects running it, and assess each container.

    With *pull_secrets* each object's images are read as its Pods will pull them (the
    server's :func:`~mutator.serve.pipeline.pod_pull_context`); without, with the node's sources only.
    """
    modes, objects = collected
    if pull_secrets is not None:
        await pull_secrets.settle()  # bounded: a miss after it is one GET
    wanted: list[tuple[str, dict[str, Any], list[Lookup]]] = []
    for kind, obj in objects:
        pull = _pull_context(obj, kind) if pull_secrets is not None else None
        images = dict.fromkeys(c["image"] for c in _all_containers(obj, kind)
                               if isinstance(c.get("image"), str) and c["image"])
        wanted.append((kind, obj, [(image, pull) for image in images]))
    lookups = list(dict.fromkeys(lookup for _, _, pairs in wanted for lookup in pairs))
    resolved = await _resolve(resolver, lookups, lookup_seconds=lookup_seconds, progress=progress)
    for kind, obj, pairs in wanted:
        namespace = (obj.get("metadata") or {}).get("namespace", "")
        resolutions = {image: resolved[(image, pull)] for image, pull in pairs}
        try:
            scan_.rows.extend(assess(obj, kind, mode=modes.get(namespace, ""), resolutions=resolutions))
        except BadReview as exc:
            name = (obj.get("metadata") or {}).get("name", "?")
            scan_.skipped.append(f"{kind.lower()}/{name} in {namespace}: {exc}")
    scan_.rows.sort(key=lambda r: (r.namespace, r.workload, r.container))
    return scan_


def _pull_context(obj: Mapping[str, Any], kind: str) -> PullContext:
    """Whose pull credentials read *obj*'s images: the same rule, and function, as the server's."""
    namespace = (obj.get("metadata") or {}).get("namespace")
    namespace = namespace if isinstance(namespace, str) else ""
    return pod_pull_context(workloads.pod_spec(obj, kind), namespace=namespace)


def _all_containers(obj: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    node = workloads.pod_spec(obj, kind)
    if node is None:
        return []
    return [c for k in ("initContainers", "containers", "ephemeralContainers")
            for c in (node.get(k) or []) if isinstance(c, dict)]


# --- the command --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="YAML config file (default: $MUTATOR_CONFIG)")
    parser.add_argument("--kubeconfig", metavar="PATH",
                        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    where = parser.add_mutually_exclusive_group()  # a context is one of a kubeconfig's, not in-cluster
    where.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    where.add_argument("--in-cluster", action="store_true", help="use the Pod's service account")
    parser.add_argument("-n", "--namespace", action="append", default=[], dest="namespaces", metavar="NAME",
                        help="only this namespace (repeatable; default: all)")
    parser.add_argument("--by", choices=("pod", "workload"), default="pod",
                        help="one row per Pod, or per workload that owns it (default: %(default)s)")
    parser.add_argument("-o", "--output", choices=("table", "json", "markdown", "html"), default="table",
                        help="output format (default: %(default)s)")


async def _scan_cluster(args: argparse.Namespace, config: Config) -> Scan:
    api, context = await connect(kubeconfig=args.kubeconfig, context=args.context, in_cluster=args.in_cluster)
    async with api:
        collected = await collect(api, by=args.by, namespaces=args.namespaces)
        # only once the cluster answered: an unreachable one is one line on stderr, not one per informer
        async with pullsecrets.on_client(api, enabled=config.pull_secrets) as secrets:
            credentials = args.credentials.with_pods(secrets)
            progress = sys.stderr if sys.stderr.isatty() else None

            async def work(resolver: Resolver) -> Scan:
                return await scan(resolver, collected, scan_=Scan(api.host, context, args.by),
                                  lookup_seconds=config.lookup_timeout_seconds + 1, progress=progress,
                                  pull_secrets=secrets)

            return await with_resolver(config, work, credentials=credentials)


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        result = asyncio.run(_scan_cluster(args, config))
    except ClusterUnreachable as exc:
        print(f"mutator report: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(report_render.render(result, args.output))
    return EXIT_ROOT if any(r.verdict == "root" for r in result.rows) else EXIT_OK
