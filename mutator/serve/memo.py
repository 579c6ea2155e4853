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

How often that comparison is made (:meth:`Memo.trusted`): for an answer that
rests on a per-Pod credential check (a private image), on every Pod. For one
every Pod may read (public images), at most once per :data:`CONFIRM_SECONDS`:
in between, a replica is answered without asking the resolver at all, so a
re-pushed public tag is noticed at most that long after its TTL ends, and
``Resolver.clear()`` (a new epoch) ends the trust at once. Those replicas do not
count as tag or image cache hits: they are counted as ``decision`` hits.

The key is read from the raw request in one typed pass (:func:`envelope`) that
keeps the spec and annotations as the bytes they arrived as, unparsed: a
repeated Pod costs a scan of its review, not a parse of it, then a dictionary
lookup. A replica's body is the first one's but for its uid, so after the first
the scan itself is skipped (:class:`_Bodies`): a pattern match at the start and
one more lookup. Anything unusual (another operation, a subresource, a field of an
unexpected type) is not kept, and goes through the full path, which validates
it and says what is wrong.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import orjson

from mutator import logs, metrics
from mutator.decide.admission import API_VERSION, KIND, PODS, AdmissionReviewDoc, Review
from mutator.decide.findings import Finding
from mutator.decide.images import ImageUser, Resolution
from mutator.decide.policy import Decision, Mode, Result
from mutator.resolve.registry.authn.credentials import PullContext

DEFAULT_ENTRIES = 256  # distinct Pod specs decided recently; each key holds its spec (a few KB)
# How long a decision on public images is reused without asking the resolver again: short next to
# any tag TTL, long next to a rollout's Pods, which then cost no resolver work at all.
CONFIRM_SECONDS = 1.0
_ABSENT = msgspec.Raw()
# Bodies recognised by all but their uid (see _Bodies): what they may hold, and the largest one kept.
BODY_BYTES = 4 << 20
MAX_BODY = 64 << 10


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


class Seen(NamedTuple):
    """A Pod CREATE as the memo sees it: the request's own fields, and the key of its decision.

    The Pod's name is in the key as the request gives it (name, generateName);
    the name shown in logs comes with the decision (:meth:`Decided.review`).
    """

    uid: str
    dry_run: bool
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
    generated = metadata.generateName if metadata is not None else None
    annotations = bytes(metadata.annotations) if metadata is not None else None
    return Seen(request.uid, request.dryRun,
                (mode, request.namespace or "", request.name, generated, annotations, bytes(obj.spec)))


# The start of a review as the API server writes it: kind, apiVersion, then the request, whose
# first field is its uid (Go writes struct fields in order). Group 1 is the uid's characters when
# they need no escape and are not control characters: then the bytes are the string.
_UID = re.compile(rb'\{\s*"kind"\s*:\s*"[^"\\]*"\s*,\s*"apiVersion"\s*:\s*"[^"\\]*"\s*,'
                  rb'\s*"request"\s*:\s*\{\s*"uid"\s*:\s*"([^"\\\x00-\x1f]+)"')


class _Bodies:
    """Bodies :func:`envelope` read before, by their bytes but the uid's: a replica is recognised
    without being scanned.

    Two bodies alike in every byte but the request's uid are the same JSON but for
    that string, so :func:`envelope` gives them the same key and dry run: only the
    uid is taken from the new body, as its bytes. Holds at most :data:`BODY_BYTES`
    of bodies (bodies over :data:`MAX_BODY` are not kept), least recently used out.
    """

    def __init__(self, *, max_bytes: int = BODY_BYTES) -> None:
        self._seen: OrderedDict[_BodyKey, tuple[bool, Hashable]] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._seen)

    @staticmethod
    def split(body: bytes, mode: Mode) -> tuple[bytes, _BodyKey] | None:
        """The uid's bytes in *body*, and the rest of it around them (keyed with *mode*); ``None``
        when *body* does not start as the API server writes a review."""
        match = _UID.match(body)
        if match is None:
            return None
        start, end = match.span(1)
        return match.group(1), (mode, body[:start], body[end:])

    def get(self, uid: bytes, key: _BodyKey) -> Seen | None:
        """The Seen of the body :meth:`split` gave, if the rest of it was read before."""
        found = self._seen.get(key)
        if found is None:
            return None
        try:
            text = uid.decode()
        except UnicodeDecodeError:  # not a JSON string: the full path says so
            return None
        self._seen.move_to_end(key)
        return Seen(text, found[0], found[1])

    def add(self, uid: bytes, key: _BodyKey, seen: Seen) -> None:
        """Remember the body :meth:`split` gave, which :func:`envelope` read as *seen*."""
        _, head, tail = key
        size = len(head) + len(uid) + len(tail)  # the body's
        if size > MAX_BODY or uid != seen.uid.encode():  # the uid must be the request's
            return
        if key not in self._seen:
            self._bytes += size - len(uid)
        self._seen[key] = (seen.dry_run, seen.key)
        while self._bytes > self._max_bytes:
            (_, head, tail), _ = self._seen.popitem(last=False)
            self._bytes -= len(head) + len(tail)


_BodyKey = tuple[Mode, bytes, bytes]  # the mode, and a body's bytes before and after its uid's


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
    result: Result  # what the admission is counted as (never "error": failures are not kept)
    namespace: str  # the Pod's, and its name as logs show it, for the replicas' reviews
    name: str
    epoch: int  # the resolver's epoch when the answers were read: see Memo.trusted
    until: float  # reused without asking the resolver until then (the memo's clock); 0: never

    def still_holds(self, resolutions: Mapping[str, Resolution]) -> bool:
        """True when the resolver gave exactly the answers this decision was made on."""
        get = resolutions.get
        return all(get(image) is known for image, known in zip(self.images, self.resolutions, strict=True))

    def answer(self, uid: str) -> bytes:
        """The answer's JSON for the request *uid*: the first request's, with *uid* in."""
        return self.head + orjson.dumps(uid) + self.tail

    def review(self, seen: Seen) -> Review:
        """The review of *seen*, a replica of this decision's Pod, as the log line takes it."""
        return Review(uid=seen.uid, operation="CREATE", kind="Pod", resource="pods", sub_resource="",
                      namespace=self.namespace, name=self.name, object=None, old_object=None,
                      dry_run=seen.dry_run)


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

    def __init__(self, *, maxsize: int = DEFAULT_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # An OrderedDict, least recently used first: a hit is two C calls, where a cachetools
        # LRUCache's get() is four Python ones, and this is the path every replica takes.
        self._entries: OrderedDict[Hashable, Decided] = OrderedDict()
        self._maxsize = maxsize
        self._bodies = _Bodies()
        self.clock = clock
        self._hit = (metrics.CACHE_LOOKUPS.labels("decision", "hit"),)  # see metrics.tally
        self._misses = metrics.CACHE_LOOKUPS.labels("decision", "miss")
        self._size = metrics.CACHE_ENTRIES.labels("decision")

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, body: bytes, mode: Mode) -> Seen | None:
        """:func:`envelope` of *body*, from the bodies read before when only the uid differs."""
        parts = self._bodies.split(body, mode)  # matched once, for the lookup and for keeping
        seen = self._bodies.get(*parts) if parts is not None else None
        if seen is None:
            seen = envelope(body, mode)
            if seen is not None and parts is not None:
                self._bodies.add(*parts, seen)
        return seen

    def get(self, key: Hashable) -> Decided | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def hit(self, decided: Decided) -> None:
        """Count a Pod answered from *decided*: a decision hit, and its containers."""
        metrics.tally(self._hit)
        metrics.tally(decided.counters)

    def trusted(self, decided: Decided, *, epoch: int) -> bool:
        """True when *decided* may answer without the resolver being asked: its answers were read
        in the resolver's current *epoch*, less than :data:`CONFIRM_SECONDS` ago, and rest on no
        per-Pod credential check (see the module docstring)."""
        return decided.epoch == epoch and self.clock() < decided.until

    def trust_until(self, *, reusable: bool) -> float:
        """Until when a decision read now may answer without the resolver (see :meth:`trusted`):
        :data:`CONFIRM_SECONDS` from now if its answers are *reusable* by every Pod, else never."""
        return self.clock() + CONFIRM_SECONDS if reusable else 0.0

    def confirmed(self, key: Hashable, decided: Decided, *, epoch: int, reusable: bool) -> Decided:
        """*decided*, the resolver having just given the same answers again (in *epoch*): trusted
        anew for another :data:`CONFIRM_SECONDS` when *reusable*."""
        if not reusable:
            return decided
        renewed = dataclasses.replace(decided, epoch=epoch, until=self.trust_until(reusable=True))
        if key in self._entries:
            self._entries[key] = renewed
        return renewed

    def keep(self, key: Hashable, decided: Decided) -> None:
        """Keep *decided* if every answer it rests on is a definite one (failures are never reused)."""
        self._misses.inc()
        if all(isinstance(r, ImageUser) for r in decided.resolutions):
            self._entries[key] = decided
            self._entries.move_to_end(key)
            while len(self._entries) > self._maxsize:
                self._entries.popitem(last=False)
            self._size.set(len(self._entries))
