"""An informer-style cache of one kind of namespaced object: list once, then watch from there.

Admissions must not wait on the API server, so what they need is kept in memory
and kept current by a watch, the way client-go's informers do it:

* list everything (optionally narrowed by a field selector), remember the list's
  ``resourceVersion``, then watch from that version;
* a watch that ends (the server closes it after ``timeoutSeconds``) is reopened
  from the last version seen; bookmarks keep that version fresh;
* a watch whose version is too old (410 Gone) starts over with a list;
* any other failure retries after a bounded, jittered exponential backoff;
* 403 Forbidden on list or watch is logged once and the informer stops: callers
  fall back to :meth:`Informer.fetch` per miss (which may be forbidden too, then
  logged once as well and answered with "nothing").

Objects are not kept as they arrive: *transform* turns each into the value the
callers need (a parsed keyring, a tuple of names), or ``None`` for an object that
is not wanted, so a malformed object costs one log line when it changes, not one
per admission.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aiohttp

from mutator.errors import KubeError

if TYPE_CHECKING:
    from mutator.resolve.kube.client import KubeClient

log = logging.getLogger(__name__)

V = TypeVar("V")
Key = tuple[str, str]  # (namespace, name)

LIST_TIMEOUT = 60.0
GET_TIMEOUT = 2.0  # a miss is fetched inside an admission: a slow API server must not eat its deadline
MAX_EVENT_BYTES = 4 * 1024 * 1024  # a Secret is at most 1 MiB; anything far bigger is not an event


class State(enum.Enum):
    STARTING = "starting"  # no list has completed yet
    WATCHING = "watching"  # the cache holds every object and follows changes
    FORBIDDEN = "forbidden"  # list/watch not allowed: callers fetch per miss


@dataclass(frozen=True, slots=True)
class Resource:
    """What to list and watch: ``/api/v1/<plural>``, optionally narrowed by a field selector."""

    kind: str  # for log lines
    plural: str
    field_selector: str = ""


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer(Generic[V]):
    """One resource's objects by (namespace, name), transformed, kept current by list + watch."""

    def __init__(
        self,
        api: KubeClient,
        resource: Resource,
        *,
        transform: Callable[[Mapping[str, Any]], V | None],
        watch_seconds: int = 300,
        max_backoff: float = 30.0,
    ) -> None:
        self._api = api
        self.resource = resource
        self._transform = transform
        self._watch_seconds = watch_seconds
        self._max_backoff = max_backoff
        self._items: dict[Key, V] = {}
        self.state = State.STARTING
        self.listed = asyncio.Event()  # set once the first list has finished (or was forbidden)
        self._fetch_forbidden_logged = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def complete(self) -> bool:
        """True when a key absent from the cache is absent from the cluster (give or take the watch lag)."""
        return self.state is State.WATCHING

    def get(self, namespace: str, name: str) -> V | None:
        return self._items.get((namespace, name))

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """List and watch until cancelled or forbidden; never raises."""
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                while True:
                    version = await self._watch(version)
            except _Gone:
                log.debug("%s watch expired; listing again", self.resource.kind)
                continue
            except KubeError as exc:
                if exc.status == 403:
                    log.warning(
                        "not allowed to list/watch %s (%s); reading them one GET per name instead. "
                        "Grant list and watch on %s to keep them cached", self.resource.plural, exc,
                        self.resource.plural,
                    )
                    self.state = State.FORBIDDEN
                    self._items.clear()
                    self.listed.set()
                    return
                failures += 1
                log.warning("%s informer: %s; retrying", self.resource.kind, exc)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                failures += 1
                log.warning("%s informer: %s; retrying", self.resource.kind, str(exc) or type(exc).__name__)
            except Exception:  # a bug here must not freeze the cache for the life of the process
                failures += 1
                log.exception("%s informer failed; retrying", self.resource.kind)
            delay = min(self._max_backoff, 0.5 * 2 ** min(failures, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _request(self, path: str, query: list[tuple[str, Any]], *, limit: float | None
                       ) -> aiohttp.ClientResponse:
        response = await self._api.get(path, query, seconds=limit)
        if response.status != 200:
            try:
                body = (await response.content.read(4096)).decode(errors="replace")
            finally:
                response.release()
            message = _status_message(body) or f"HTTP {response.status}"
            if response.status == 410:
                raise _Gone(message)
            raise KubeError(f"GET {path}: {message}", status=response.status)
        return response

    def _selector(self) -> list[tuple[str, Any]]:
        return [("fieldSelector", self.resource.field_selector)] if self.resource.field_selector else []

    async def _list(self) -> str:
        path = f"/api/v1/{self.resource.plural}"
        response = await self._request(path, self._selector(), limit=LIST_TIMEOUT)
        try:
            document = json.loads(await response.read())
        finally:
            response.release()
        items = document.get("items") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise ValueError(f"the {self.resource.kind} list is not a list")
        fresh: dict[Key, V] = {}
        for obj in items:
            key = _key(obj)
            value = self._transform(obj) if key is not None else None
            if key is not None and value is not None:
                fresh[key] = value
        self._items = fresh
        self.state = State.WATCHING
        self.listed.set()
        log.info("%s informer%s: %d listed", self.resource.kind,
                 f" ({self.resource.field_selector})" if self.resource.field_selector else "", len(fresh))
        return str(document.get("metadata", {}).get("resourceVersion", ""))

    async def _watch(self, version: str) -> str:
        """Follow changes from *version* until the server ends the watch; the last version seen."""
        seconds = random.randint(self._watch_seconds, 2 * self._watch_seconds)  # spread the re-watches
        query = [*self._selector(), ("watch", "1"), ("resourceVersion", version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", seconds)]
        # The server ends the watch after timeoutSeconds; our own bound catches a connection that died
        # silently, which would otherwise leave the cache frozen without a single error.
        response = await self._request(f"/api/v1/{self.resource.plural}", query, limit=seconds + 30)
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return version
                if len(line) > MAX_EVENT_BYTES:
                    raise ValueError("oversized watch event")
                version = self._apply(json.loads(line), version)
        finally:
            response.release()

    def _apply(self, event: Any, version: str) -> str:
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise ValueError("a watch event without an object")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone(str(obj.get("message", "")))
            raise KubeError(f"watch error: {obj.get('message', obj)}", status=obj.get("code"))
        key = _key(obj)
        if key is not None and kind in ("ADDED", "MODIFIED", "DELETED"):
            value = self._transform(obj) if kind != "DELETED" else None
            if value is None:
                self._items.pop(key, None)
            else:
                self._items[key] = value
        seen = obj.get("metadata", {}).get("resourceVersion")
        return str(seen) if seen else version

    # -- one object, on a miss -----------------------------------------------------------------
    async def fetch(self, namespace: str, name: str) -> V | None:
        """GET one object (a cache miss); ``None`` when it does not exist or may not be read.

        Never raises for the cluster's answers: a missing or unreadable object means
        "try the next credential source", not a failed admission. The caller decides
        how long to trust the answer: the watch, not this GET, keeps the cache current.
        """
        path = (f"/api/v1/namespaces/{urllib.parse.quote(namespace, safe='')}/"
                f"{self.resource.plural}/{urllib.parse.quote(name, safe='')}")
        try:
            response = await self._request(path, [], limit=GET_TIMEOUT)
            try:
                obj = json.loads(await response.read())
            finally:
                response.release()
        except KubeError as exc:
            if exc.status == 403 and not self._fetch_forbidden_logged:
                self._fetch_forbidden_logged = True
                log.warning("not allowed to get %s (%s); pull secrets are not read",
                            self.resource.plural, exc)
            elif exc.status not in (403, 404):
                log.warning("cannot read %s %s/%s: %s", self.resource.kind, namespace, name, exc)
            return None
        except (_Gone, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.warning("cannot read %s %s/%s: %s", self.resource.kind, namespace, name,
                        str(exc) or type(exc).__name__)
            return None
        return self._transform(obj) if isinstance(obj, dict) else None


def _key(obj: Any) -> Key | None:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict):
        return None
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    return namespace, name


def _status_message(body: str) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    return str(status.get("message", "")) if isinstance(status, dict) else ""
