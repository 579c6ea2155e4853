"""A Pod's pull credentials from the cluster: its ``imagePullSecrets``, else its ServiceAccount's.

The node pulls with the Secrets named in the Pod's ``spec.imagePullSecrets``. A
Pod that names none gets its ServiceAccount's ``imagePullSecrets`` copied in by
the ServiceAccount admission plugin, which runs before any webhook; so in a real
cluster we see them in the Pod already, and reading the ServiceAccount ourselves
only matters for a Pod that reached us without that plugin. We follow the same
rule: the ServiceAccount's secrets count only when the Pod names none, exactly as
the node would pull (a Pod's own list hides its ServiceAccount's, even when it
does not match the image).

Secrets and ServiceAccounts are kept by informers (list + watch), so an
admission reads memory, not the API server. A name not in the cache (the
informer not synced yet, the Secret made a moment ago, or list/watch not
allowed) is fetched with one GET, coalesced, and its answer is remembered for
``FETCHED_SECONDS`` so a Pod naming a Secret that does not exist costs one GET, not
one per admission. Nothing here raises into an admission: a missing, forbidden
or malformed Secret is "no credentials from here", and the next source is asked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from cachetools import TTLCache

from mutator.resolve.kube.client import api_client
from mutator.resolve.kube.informer import Informer, Resource
from mutator.resolve.registry.authn.keyring import Keyring

if TYPE_CHECKING:
    from mutator.resolve.kube.client import KubeClient

log = logging.getLogger(__name__)

# The two Secret types the kubelet reads pull credentials from, and the data key of each.
SECRET_TYPES = {
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
    "kubernetes.io/dockercfg": ".dockercfg",
}
# How long the answer of a GET on a miss is trusted: a Secret found missing is not asked for
# again, and without a watch (list/watch forbidden) a fetched one is not re-read per admission.
FETCHED_SECONDS = 30.0
READY_WAIT_SECONDS = 10.0  # readiness waits at most this long for the first lists


class PodPull(Protocol):
    """The parts of a Pod that decide its pull credentials (``PullContext``)."""

    @property
    def namespace(self) -> str: ...
    @property
    def pull_secrets(self) -> tuple[str, ...]: ...
    @property
    def service_account(self) -> str: ...


def secret_keyring(secret: Mapping[str, Any]) -> Keyring | None:
    """A pull Secret's keyring; ``None`` for other Secret types.

    A malformed Secret (bad base64, not JSON) is an empty keyring and one log line,
    never an exception: one tenant's broken Secret must not fail anyone's admission.
    """
    kind = secret.get("type")
    data_key = SECRET_TYPES.get(kind) if isinstance(kind, str) else None
    if data_key is None:
        return None
    metadata = secret.get("metadata") if isinstance(secret.get("metadata"), dict) else {}
    source = f"secret {metadata.get('namespace', '?')}/{metadata.get('name', '?')}"
    data = secret.get("data")
    encoded = data.get(data_key) if isinstance(data, dict) else None
    if not isinstance(encoded, str):
        log.warning("ignoring %s: type %s without data[%r]", source, kind, data_key)
        return Keyring()
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        log.warning("ignoring %s: data[%r] is not base64 of JSON", source, data_key)
        return Keyring()
    if not isinstance(document, dict):
        log.warning("ignoring %s: data[%r] is not a JSON object", source, data_key)
        return Keyring()
    if kind == "kubernetes.io/dockerconfigjson" and not isinstance(document.get("auths"), dict):
        log.warning("ignoring %s: data[%r] has no \"auths\" object", source, data_key)
        return Keyring()
    return Keyring.from_docker_config(document, source=source)


def account_pull_secrets(account: Mapping[str, Any]) -> tuple[str, ...]:
    """The Secret names in a ServiceAccount's ``imagePullSecrets``, in order."""
    return _names(account.get("imagePullSecrets"))


def _names(entries: Any) -> tuple[str, ...]:
    if not isinstance(entries, list):
        return ()
    return tuple(e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)
                 and e["name"])


class PullSecrets:
    """The ``PodKeyrings`` source backed by the cluster (informers over Secrets and ServiceAccounts)."""

    def __init__(self, api: KubeClient, *, fetched_seconds: float = FETCHED_SECONDS,
                 owns_api: bool = True) -> None:
        self._api = api
        self._owns_api = owns_api  # False: the client is the caller's, who closes it
        # A field selector takes one value per field, so one informer per Secret type:
        # service-account tokens and every other Secret never reach us.
        self._secrets = [
            Informer(api, Resource("Secret", "secrets", f"type={kind}"), transform=secret_keyring)
            for kind in SECRET_TYPES
        ]
        self._accounts: Informer[tuple[str, ...]] = Informer(
            api, Resource("ServiceAccount", "serviceaccounts"), transform=account_pull_secrets
        )
        self._fetched: TTLCache[tuple[str, str, str], Any] = TTLCache(maxsize=10_000, ttl=fetched_seconds)
        self._inflight: dict[tuple[str, str, str], asyncio.Future[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0

    @property
    def informers(self) -> list[Informer[Any]]:
        return [*self._secrets, self._accounts]

    def start(self) -> None:
        self._started = asyncio.get_running_loop().time()
        self._tasks = [asyncio.create_task(informer.run(), name=f"{informer.resource.kind} informer")
                       for informer in self.informers]

    @property
    def ready(self) -> bool:
        """True once every first list is done (or forbidden), or after ``READY_WAIT_SECONDS`` regardless:
        until then misses are fetched one by one, so readiness need not wait for a slow API server."""
        if all(informer.listed.is_set() for informer in self.informers):
            return True
        return asyncio.get_running_loop().time() - self._started >= READY_WAIT_SECONDS

    async def settle(self) -> bool:
        """Wait for every first list (done, or forbidden), at most until :attr:`ready` would say yes
        regardless; True if all finished.

        For a one-off reader (``mutator report``) that wants its answers from the lists, not
        from one GET per name, yet must not hang on a slow API server: a miss after the wait
        is still fetched by GET.
        """
        left = self._started + READY_WAIT_SECONDS - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(0.0, left)):
                for informer in self.informers:
                    await informer.listed.wait()
        except TimeoutError:
            log.info("pull secrets: the first lists took over %g s; reading misses one GET each",
                     READY_WAIT_SECONDS)
            return False
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._owns_api:
            await self._api.close()

    # -- the PodKeyrings hook -------------------------------------------------------------------
    async def keyring(self, pod: PodPull) -> Keyring | None:
        """The Pod's pull secrets as one keyring, in the order the Pod names them; None if none is usable."""
        names = tuple(pod.pull_secrets)
        if not names and pod.service_account:
            names = await self._lookup(self._accounts, pod.namespace, pod.service_account) or ()
        if not names:
            return None
        found = await asyncio.gather(*(self._secret(pod.namespace, name) for name in names))
        keyrings = [keyring for keyring in found if keyring]
        return Keyring.merge(*keyrings) if keyrings else None

    async def _secret(self, namespace: str, name: str) -> Keyring | None:
        for informer in self._secrets:
            cached = informer.get(namespace, name)
            if cached is not None:
                return cached
        # either informer can GET any Secret: the transform decides whether its type is one of ours
        return await self._lookup(self._secrets[0], namespace, name, cached=False)

    async def _lookup(self, informer: Informer[Any], namespace: str, name: str, *, cached: bool = True
                      ) -> Any:
        """From the informer's cache, else one coalesced GET whose answer is remembered for a while."""
        if cached:
            value = informer.get(namespace, name)
            if value is not None:
                return value
        key = (informer.resource.plural, namespace, name)
        if key in self._fetched:
            return self._fetched[key]
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(informer.fetch(namespace, name))
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        value = await asyncio.shield(pending)
        self._fetched[key] = value
        return value


async def from_config(*, enabled: bool, kubeconfig: str | None) -> PullSecrets | None:
    """Start reading pull secrets when *enabled* and a cluster is configured; ``None`` otherwise.

    Raises :class:`~mutator.errors.ConfigError` for a named kubeconfig that cannot be used.
    """
    if not enabled:
        _disabled()
        return None
    api = await api_client(kubeconfig=kubeconfig)
    if api is None:
        # the usual case off a cluster (`serve --dev`, tests): nothing to say at info level
        log.debug("no cluster configured (in-cluster, --kubeconfig, $KUBECONFIG or kubeconfig): "
                  "pull secrets are not read")
        return None
    secrets = PullSecrets(api)
    secrets.start()
    return secrets


@contextlib.asynccontextmanager
async def on_client(api: KubeClient, *, enabled: bool) -> AsyncIterator[PullSecrets | None]:
    """Pull secrets read through a client the caller already has (``mutator report``, whose
    ``--kubeconfig``, ``--context`` or ``--in-cluster`` chose the cluster); ``None`` when not *enabled*.

    The informers start here and stop on exit; the client stays open, it is the caller's.
    """
    if not enabled:
        _disabled()
        yield None
        return
    secrets = PullSecrets(api, owns_api=False)
    secrets.start()
    try:
        yield secrets
    finally:
        await secrets.close()


def _disabled() -> None:
    log.info("pull secrets are not read (pull_secrets: false): only node-wide credentials apply")
