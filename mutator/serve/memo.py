"""Decisions already made: the replicas of a rollout are one Pod spec, decided once.

A Deployment scaled to 500 replicas sends 500 Pod CREATEs whose specs are equal
byte for byte: same containers, images, security contexts and pull secrets. The
decision is a pure function of that spec, the mode, the Pod's namespace and
name as the request gives them (``web-7d9f-*`` for every replica), its
annotations (ours records earlier patches), and what the resolver answers for
the images. So the answer is kept under the first five, and reused only while
the resolver still gives *the very same* answers: compared by identity, not by
value, so a tag re-read after its TTL, an evicted image, or an access check that
now refuses is a new object and the Pod is decided again. Nothing that can
change is trusted; only the work of deciding the same thing twice is saved.

The key is read from the raw request in one typed pass (:func:`envelope`) that
keeps the spec and annotations as the bytes they arrived as, unparsed: a
repeated Pod costs a scan of its review, not a parse of it, then a dictionary
lookup. Anything unusual (another operation, a subresource, a field of an
unexpected type) is not kept, and goes through the full path, which validates
it and says what is wrong.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
from cachetools import LRUCache

from mutator import logs, metrics
from mutator.decide.admission import API_VERSION, KIND, PODS, AdmissionReviewDoc, Review, shown_name
from mutator.decide.findings import Finding
from mutator.decide.images import ImageUser, Resolution
from mutator.decide.policy import Decision, Mode
from mutator.resolve.registry.authn.credentials import PullContext

DEFAULT_ENTRIES = 256  # distinct Pod specs decided recently; each key holds its spec (a few KB)
_ABSENT = msgspec.Raw()


class _Kind(msgspec.Struct):
    kind: str = ""


class _Resource(msgspec.Struct):
    group: str = ""
    resource: str = ""


class _Metadata(msgspec.Struct):
    generateName: str | None = None
    annotations: msgspec.Raw = _ABSENT


class _Object(msgspec.Struct):
    metadata: _Metadata | None = None
    spec: msgspec.Raw = _ABSENT


class _Request(msgspec.Struct):
    uid: str
    kind: _Kind
    resource: _Resource
    operation: str
    namespace: str | None = None
    name: str | None = None
    subResource: str | None = None
    dryRun: bool = False
    object: _Object | None = None
    oldObject: msgspec.Raw = _ABSENT


class _Envelope(msgspec.Struct):
    apiVersion: str
    kind: str
    request: _Request


_DECODER = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True, slots=True)
class Seen:
    """A Pod CREATE as the memo sees it: the review for the log line, and the key of its decision."""

    review: Review
    key: Hashable


def envelope(body: bytes, mode: Mode) -> Seen | None:
    """The review's key fields in one typed pass, the spec left unparsed; ``None`` when not kept.

    Accepts only what the full path would accept unchanged: a Pod CREATE on
    ``pods``, with a uid, an object and no old object. Whatever else arrives
    (a malformed review included) goes through the full path.
    """
    try:
        document = _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    request = document.request
    obj = request.object
    if (document.kind != KIND or document.apiVersion != API_VERSION or not request.uid
            or request.operation != "CREATE" or request.subResource or request.kind.kind != "Pod"
            or (request.resource.group, request.resource.resource) not in PODS
            or obj is None or obj.spec is _ABSENT or bytes(request.oldObject) not in (b"", b"null")):
        return None
    metadata = obj.metadata
    name = shown_name(request.name, metadata.generateName if metadata is not None else None)
    namespace = request.namespace or ""
    review = Review(uid=request.uid, operation="CREATE", kind="Pod", resource="pods", sub_resource="",
                    namespace=namespace, name=name, object=None, old_object=None, dry_run=request.dryRun)
    annotations = bytes(metadata.annotations) if metadata is not None else None
    return Seen(review, (mode, namespace, name, annotations, bytes(obj.spec)))


@dataclass(frozen=True, slots=True)
class Decided:
    """One decision and everything it was made from that can change (images, their answers), with
    what answering it again costs nothing to redo: its answer's JSON around the uid, its log line
    and its container counters."""

    images: tuple[str, ...]
    pull: PullContext
    resolutions: tuple[Resolution, ...]  # the answers, in ``images`` order, compared by identity
    decision: Decision
    found: tuple[Finding, ...]
    head: bytes  # the answer's JSON is head + the request's own uid + tail: see encoded()
    tail: bytes
    line: logs.AdmissionLine | None  # None: a plain allow, which logs nothing
    counters: tuple[Any, ...]  # the containers' counters, bound to the mode and each outcome

    def still_holds(self, resolutions: Mapping[str, Resolution]) -> bool:
        """True when the resolver gave exactly the answers this decision was made on."""
        get = resolutions.get
        return all(get(image) is known for image, known in zip(self.images, self.resolutions, strict=True))

    def answer(self, uid: str) -> bytes:
        """The answer's JSON for the request *uid*: the first request's, with *uid* in."""
        return self.head + orjson.dumps(uid) + self.tail


def encoded(response: AdmissionReviewDoc) -> tuple[bytes, bytes]:
    """*response*'s JSON on either side of its uid: ``head + orjson.dumps(uid) + tail`` is
    ``orjson.dumps(response)`` (:func:`mutator.decide.admission.respond` puts the uid first)."""
    inner = dict(response["response"])
    del inner["uid"]
    head = b'{"apiVersion":%s,"kind":%s,"response":{"uid":' % (
        orjson.dumps(response["apiVersion"]), orjson.dumps(response["kind"]))
    return head, b"," + orjson.dumps(inner)[1:] + b"}"


class Memo:
    """Decisions by key (see :func:`envelope`): bounded, least recently used first out.

    Counted as the ``decision`` cache: a hit is a Pod answered from here, a miss
    one decided afresh (a new spec, or one whose images now answer differently).
    """

    def __init__(self, *, maxsize: int = DEFAULT_ENTRIES) -> None:
        self._entries: LRUCache[Hashable, Decided] = LRUCache(maxsize=maxsize)
        self._hits = metrics.CACHE_LOOKUPS.labels("decision", "hit")
        self._misses = metrics.CACHE_LOOKUPS.labels("decision", "miss")
        self._size = metrics.CACHE_ENTRIES.labels("decision")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Decided | None:
        return self._entries.get(key)

    def hit(self) -> None:
        self._hits.inc()

    def keep(self, key: Hashable, decided: Decided) -> None:
        """Keep *decided* if every answer it rests on is a definite one (failures are never reused)."""
        self._misses.inc()
        if all(isinstance(r, ImageUser) for r in decided.resolutions):
            self._entries[key] = decided
            self._size.set(len(self._entries))
