"""AdmissionReview ``admission.k8s.io/v1`` in and out, as plain typed data. No I/O.

Two jobs: validate what the API server sent (anything malformed is a
:class:`~mutator.errors.BadReview`, answered with HTTP 400), and say which
containers of the request are up for a decision, with the JSON pointer where a
patch must go. The decision itself lives in :mod:`mutator.decide.policy`.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict, cast, get_args

import orjson

from mutator.errors import BadReview

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_BODY_BYTES = 3 * 1024 * 1024  # the API server's own limit on a request body
MAX_WARNING_CHARS = 120  # longer warnings are truncated by the API server anyway
# (group, resource) pairs a route accepts; the pod routes accept nothing else.
PODS: frozenset[tuple[str, str]] = frozenset({("", "pods")})

ContainerKind = Literal["initContainers", "containers", "ephemeralContainers"]
# The operations an AdmissionRequest can carry (admission.k8s.io/v1); we are registered for the first two.
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: frozenset[str] = frozenset(get_args(Operation))


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequestDoc(TypedDict, total=False):
    """The request as the API server sends it; :func:`validate` checks it into a :class:`Review`."""

    uid: str
    # what is asked about: as the webhook's rules matched it, and as it was sent
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: str
    requestKind: GroupVersionKind
    requestResource: GroupVersionResource
    requestSubResource: str
    name: str
    namespace: str
    # what is done to it, and by whom
    operation: Operation
    userInfo: UserInfo
    object: dict[str, Any] | None
    oldObject: dict[str, Any] | None
    dryRun: bool
    options: dict[str, Any] | None


class StatusDoc(TypedDict):
    code: int
    message: str
    reason: NotRequired[str]


class AdmissionResponseDoc(TypedDict):
    uid: str
    allowed: bool
    auditAnnotations: NotRequired[dict[str, str]]
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]
    status: NotRequired[StatusDoc]


class AdmissionReviewDoc(TypedDict):
    apiVersion: str
    kind: str
    request: NotRequired[AdmissionRequestDoc]
    response: NotRequired[AdmissionResponseDoc]


class Review(NamedTuple):
    """The parts of an AdmissionRequest the webhook uses, checked for shape.

    A named tuple rather than a dataclass: one is made per admission, a memo hit
    included, and a tuple is built in a third of the time a frozen dataclass is.
    """

    uid: str
    operation: Operation
    kind: str
    resource: str
    sub_resource: str
    namespace: str
    name: str
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool


@dataclass(frozen=True, slots=True)
class Container:
    """One container up for a decision, with where its patch goes."""

    kind: ContainerKind
    name: str
    image: str | None
    pointer: str  # JSON pointer to the container object in the request's object
    security_context: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Target:
    """The containers of a request that need a decision, and the pod around them.

    ``pod_security_context`` is ``None`` when the request does not carry the pod
    spec (v1.20's ``EphemeralContainers`` object): pod-level settings are then
    unknown and only container-level ones count.
    """

    pod_security_context: Mapping[str, Any] | None
    containers: tuple[Container, ...]


def decode(body: bytes | str, *, resources: frozenset[tuple[str, str]] = PODS) -> Review:
    """Parse and validate an AdmissionReview body; raises :class:`BadReview`."""
    if len(body) > MAX_BODY_BYTES:
        raise BadReview(f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        document = orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        if str(exc).startswith("depth limit exceeded"):  # orjson stops at 1024 levels by itself
            raise BadReview("request body is nested too deeply to be an AdmissionReview") from None
        raise BadReview(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # thousands of nested arrays: the parser's stack, not ours to grow
        raise BadReview("request body is nested too deeply to be an AdmissionReview") from None
    return validate(document, resources=resources)


def validate(document: Any, *, resources: frozenset[tuple[str, str]] = PODS) -> Review:
    """Check the envelope, and that the resource is one *resources* names (else a 400)."""
    if not isinstance(document, dict):
        raise BadReview("an AdmissionReview must be a JSON object")
    if document.get("kind") != KIND or document.get("apiVersion") != API_VERSION:
        raise BadReview(
            f"expected kind {KIND} apiVersion {API_VERSION}, got kind "
            f"{document.get('kind')!r} apiVersion {document.get('apiVersion')!r}"
        )
    request = document.get("request")
    if not isinstance(request, dict):
        raise BadReview("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing")
    operation = _string(request, "operation", required=True)
    if operation not in OPERATIONS:
        raise BadReview(f"request.operation must be one of {', '.join(sorted(OPERATIONS))}, "
                        f"got {operation!r}")
    kind = request.get("kind")
    resource = request.get("resource")
    if not isinstance(kind, dict) or not isinstance(resource, dict):
        raise BadReview("request.kind and request.resource must be objects")
    asked = (resource.get("group", ""), resource.get("resource"))
    if not all(isinstance(part, str) for part in asked) or asked not in resources:  # a list is unhashable
        wanted = ", ".join(sorted(f"{g or 'core'}/{r}" for g, r in resources))
        raise BadReview(
            f"this route reviews {wanted} only, got resource {resource.get('resource')!r}"
            f" in group {resource.get('group')!r}: check the webhook's rules"
        )
    obj, old = request.get("object"), request.get("oldObject")
    for key, value in (("object", obj), ("oldObject", old)):
        if value is not None and not isinstance(value, dict):
            raise BadReview(f"request.{key} must be an object")
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise BadReview("request.dryRun must be a boolean")
    return Review(
        uid=uid,
        operation=cast(Operation, operation),
        kind=_string(kind, "kind", required=True),
        resource=str(resource.get("resource")),
        sub_resource=_string(request, "subResource"),
        namespace=_string(request, "namespace"),
        name=_string(request, "name") or _generate_name(obj),
        object=obj,
        old_object=old,
        dry_run=dry_run,
    )


def _string(mapping: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = mapping.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise BadReview(f"{key} must be a non-empty string")
    return value


def shown_name(name: Any, generate_name: Any) -> Any:
    """An object's name as a human knows it: Pods made by controllers arrive without a name,
    so theirs is the generateName they were given, with ``*`` for the suffix yet to come."""
    if name:
        return name
    return generate_name + "*" if isinstance(generate_name, str) else ""


def _generate_name(obj: Mapping[str, Any] | None) -> str:
    metadata = (obj or {}).get("metadata")
    return shown_name("", metadata.get("generateName")) if isinstance(metadata, dict) else ""


def target(review: Review) -> Target | None:
    """The containers this request asks us to decide on; ``None`` to allow it untouched.

    Pod CREATE: every container. UPDATE of ``pods/ephemeralcontainers``: only the
    ephemeral containers the update adds, since existing ones are immutable and a
    patch to them would make the API server reject the whole update. Everything
    else (other updates, deletes, connects) is not ours to change.
    """
    obj = review.object
    if review.operation == "CREATE" and not review.sub_resource:
        if review.kind != "Pod":
            raise BadReview(f"a pod CREATE must carry a Pod, got kind {review.kind!r}")
        return pod_target(_pod_spec(obj), "/spec")

    if review.operation == "UPDATE" and review.sub_resource == "ephemeralcontainers":
        if review.kind == "Pod":  # newer API servers send the whole Pod
            spec = _pod_spec(obj)
            if _is_windows(spec):
                return None
            old = _names(_pod_spec(review.old_object) if review.old_object else {})
            new = [c for c in _containers(spec, "ephemeralContainers", "/spec") if c.name not in old]
            return Target(pod_security_context=_security_context(spec, "spec"), containers=tuple(new))
        if review.kind == "EphemeralContainers":  # v1.20: no spec, a top-level list
            if not isinstance(obj, dict):
                raise BadReview("request.object is missing")
            old = _names(review.old_object or {})
            new = [c for c in _containers(obj, "ephemeralContainers", "") if c.name not in old]
            return Target(pod_security_context=None, containers=tuple(new))
        raise BadReview(f"unexpected kind {review.kind!r} for pods/ephemeralcontainers")
    return None


def pod_target(spec: Mapping[str, Any], prefix: str) -> Target | None:
    """Every container of the pod *spec* found at JSON pointer *prefix*; ``None`` for Windows pods.

    Shared with the workload path, where the spec sits in a template
    (``/spec/template/spec``, ``/spec/jobTemplate/spec/template/spec``).
    """
    if _is_windows(spec):
        return None
    found: list[Container] = []
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        found.extend(_containers(spec, kind, prefix))
    where = prefix.strip("/").replace("/", ".")
    return Target(pod_security_context=_security_context(spec, where), containers=tuple(found))


def _pod_spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise BadReview("request.object is missing")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise BadReview("request.object.spec must be an object")
    return spec


def _is_windows(spec: Mapping[str, Any]) -> bool:
    """runAsNonRoot on Windows is about runAsUserName, which this webhook does not handle."""
    os_ = spec.get("os")
    return isinstance(os_, dict) and os_.get("name") == "windows"


def _mapping(parent: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadReview(f"{key} must be an object")
    return value


# The fields the decision reads, with the types a real API server guarantees; anything else is a
# malformed request (answered 400), never a guess: ``runAsUser: true`` must not read as uid 1.
_SECURITY_FIELDS = {"runAsUser": (int, "an integer"), "runAsGroup": (int, "an integer"),
                    "runAsNonRoot": (bool, "a boolean")}


def _security_context(parent: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
    context = _mapping(parent, "securityContext")
    for key, (kind, described) in _SECURITY_FIELDS.items():
        value = (context or {}).get(key)
        if value is not None and type(value) is not kind:
            raise BadReview(f"{where}.securityContext.{key} must be {described}")
    return context


def _containers(parent: Mapping[str, Any], kind: ContainerKind, prefix: str) -> list[Container]:
    items = parent.get(kind)
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadReview(f"{kind} must be a list")
    found = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadReview(f"{kind}[{index}] must be an object with a name")
        image = item.get("image")
        if image is not None and not isinstance(image, str):
            raise BadReview(f"{kind}[{index}].image must be a string")
        found.append(
            Container(
                kind=kind,
                name=item["name"],
                image=image or None,
                pointer=f"{prefix}/{kind}/{index}",
                security_context=_security_context(item, f"{kind}[{index}]"),
            )
        )
    return found


def _names(parent: Mapping[str, Any]) -> set[str]:
    items = parent.get("ephemeralContainers") or []
    if not isinstance(items, list):
        return set()
    return {c["name"] for c in items if isinstance(c, dict) and isinstance(c.get("name"), str)}


def respond(
    review_uid: str,
    *,
    allowed: bool,
    patch: Sequence[Mapping[str, Any]] = (),
    warnings: Sequence[str] = (),
    code: int = 403,
    message: str = "",
    audit_annotations: Mapping[str, str] | None = None,
) -> AdmissionReviewDoc:
    """Build the response document; the patch is base64 JSON as the API server wants it."""
    response: AdmissionResponseDoc = {"uid": review_uid, "allowed": allowed}
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    if patch and allowed:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(list(patch))).decode()
    if warnings:
        response["warnings"] = [clip(w) for w in warnings]
    if not allowed:
        response["status"] = {"code": code, "message": message, "reason": "Forbidden"}
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def clip(text: str, limit: int = MAX_WARNING_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def review_for_pod(pod: Mapping[str, Any]) -> AdmissionReviewDoc:
    """Wrap a bare Pod manifest in a CREATE review, for offline checks (``mutator review``)."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    request: AdmissionRequestDoc = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": str(metadata.get("name", "")),
        "namespace": str(metadata.get("namespace", "")),
        "operation": "CREATE",
        "object": dict(pod),
        "oldObject": None,
        "dryRun": True,
    }
    return {"apiVersion": API_VERSION, "kind": KIND, "request": request}


def patch_of(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Decode the JSONPatch of a response document (for callers and tests)."""
    response = document.get("response") or {}
    encoded = response.get("patch")
    return orjson.loads(base64.b64decode(encoded)) if encoded else []
