"""Evidence of every decision, for auditors: audit annotations and the Pod's ``run-as`` annotation. Pure.

The API server writes a webhook's ``auditAnnotations`` into its audit log
(prefixed with the webhook's name, e.g. ``enforce.nonroot-mutator.dev/decision``),
so every admission leaves a record of what was decided and why. A Pod we
patch also carries :data:`ANNOTATION`, so ``kubectl get pod -o yaml`` explains
where its ``runAsUser`` came from, and ``mutator report`` can tell "patched by
us" from "set by the developer".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mutator.decide.findings import Finding

ANNOTATION = "nonroot-mutator.dev/run-as"
# The key in a JSON pointer: "/" is written "~1" (RFC 6901).
_ANNOTATION_POINTER = "/metadata/annotations/" + ANNOTATION.replace("~", "~0").replace("/", "~1")
# Audit annotation values are stored in every audit event: keep them small.
MAX_AUDIT_VALUE_CHARS = 4096
# An image's USER is whatever its config says: bounded, so no image can bloat a Pod past the API
# server's 256 KiB limit on annotations, or an audit event.
MAX_FIELD_CHARS = 256
# The whole run-as annotation; past it only the numbers are kept (the rest is in the audit log).
MAX_ANNOTATION_CHARS = 64 * 1024


def _bounded(value: Any) -> Any:
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else value


def _compact(data: Any) -> str:
    # json, not orjson: a container name may hold a lone surrogate (valid JSON "\ud800"), which
    # orjson refuses and json escapes
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def audit_annotations(findings: Sequence[Finding], *, mode: str, result: str) -> dict[str, str]:
    """``mode``, ``decision`` and ``containers`` (JSON, bounded); keys are valid qualified names.

    Linear in the number of containers: a Pod may have thousands, and this runs on every admission.
    """
    entries = [_audit_entry(f) for f in findings]
    value = _bounded_list(entries)
    if value is None:
        # Digests are the longest part and can be found again from the image; names and outcomes cannot.
        entries = [{k: v for k, v in e.items() if k != "digest"} for e in entries]
        value = _bounded_list(entries)
    if value is None:
        value = _bounded_list(entries, omit=True)
    assert value is not None
    return {"mode": mode, "decision": result, "containers": value}


def _bounded_list(entries: Sequence[dict[str, Any]], *, omit: bool = False) -> str | None:
    """*entries* as a JSON list within MAX_AUDIT_VALUE_CHARS; ``None`` if they do not all fit,
    unless *omit*: then as many as fit, and ``{"omitted": n}`` for the rest."""
    parts: list[str] = []
    size = 2  # the brackets
    reserve = len(_compact({"omitted": len(entries)})) + 1 if omit else 0
    for entry in entries:
        text = _compact(entry)
        if size + len(text) + 1 + reserve > MAX_AUDIT_VALUE_CHARS:
            if not omit:
                return None
            parts.append(_compact({"omitted": len(entries) - len(parts)}))
            break
        parts.append(text)
        size += len(text) + 1
    return "[" + ",".join(parts) + "]"


def _audit_entry(finding: Finding) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": finding.name, "outcome": finding.outcome}
    for key, value in (("image", finding.container.image), ("digest", finding.digest),
                       ("user", finding.user), ("uid", finding.uid), ("gid", finding.gid),
                       ("runAsUser", finding.run_as_user)):
        if value is not None:
            entry[key] = _bounded(value)
    if finding.problem:
        entry["detail"] = _bounded(finding.detail)
    return entry


def run_as_record(finding: Finding) -> dict[str, Any]:
    """What the Pod annotation says about one patched container."""
    record: dict[str, Any] = {"image": _bounded(finding.container.image), "digest": finding.digest,
                              "user": _bounded(finding.user), "uid": finding.uid, "gid": finding.gid}
    if finding.user_layer:
        record["layer"] = _bounded(finding.user_layer)
    return record


def read_run_as(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The containers a Pod's annotation says we patched (empty when absent or not ours to read)."""
    annotations = (metadata or {}).get("annotations")
    text = annotations.get(ANNOTATION) if isinstance(annotations, Mapping) else None
    if not isinstance(text, str):
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def annotation_ops(metadata: Mapping[str, Any] | None, patched: Sequence[Finding]) -> list[dict[str, Any]]:
    """JSONPatch ops that record *patched* containers in the Pod's annotation.

    Merged with what an earlier invocation recorded, so a re-invocation after a
    sidecar injector adds the sidecar and keeps the rest; with nothing newly
    patched there is no op, so a re-invocation changes nothing.
    """
    if not patched:
        return []
    record = read_run_as(metadata)
    record.update({f.name: run_as_record(f) for f in patched})
    value = _compact(record)
    if len(value) > MAX_ANNOTATION_CHARS:
        value = _compact({name: {"uid": r.get("uid"), "gid": r.get("gid")} for name, r in record.items()})
    annotations = (metadata or {}).get("annotations")
    if not isinstance(annotations, Mapping):
        ops: list[dict[str, Any]] = []
        if not isinstance(metadata, Mapping):
            ops.append({"op": "add", "path": "/metadata", "value": {}})
        return [*ops, {"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION: value}}]
    return [{"op": "add", "path": _ANNOTATION_POINTER, "value": value}]
