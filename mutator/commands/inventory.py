"""The report's vocabulary and verdicts, per container of a Pod or workload read from a cluster. Pure.

Kept apart from the cluster access (:mod:`mutator.commands.report`) and the rendering
(:mod:`mutator.commands.report_render`) so that every verdict is testable on plain
objects, and both can share :class:`Scan` without importing each other.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mutator.decide import evidence, findings, policy, workloads
from mutator.decide.findings import Finding
from mutator.decide.images import ImageUser, Resolution
from mutator.decide.policy import Mode

Verdict = Literal["fine", "patched", "named-user", "root", "unresolvable"]
VERDICTS: dict[Verdict, str] = {
    "fine": "numeric and fine",
    "patched": "patched by nonroot-mutator",
    "named-user": "would fail runAsNonRoot (named user)",
    "root": "runs as root",
    "unresolvable": "unresolvable",
}

@dataclass(frozen=True, slots=True)
class Row:
    namespace: str
    mode: str  # the namespace's nonroot-mutator/mode label, "" when not opted in
    workload: str
    container: str
    image: str
    digest: str
    user: str | None
    run_as_user: Any
    run_as_non_root: Any
    verdict: Verdict
    detail: str


@dataclass(slots=True)
class Scan:
    """What the report says: where, when, and one row per container."""

    server: str
    context: str
    by: str
    generated: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rows: list[Row] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what could not be read, and why

    def summary(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for row in self.rows:
            per = counts.setdefault(row.namespace, {v: 0 for v in VERDICTS})
            per[row.verdict] += 1
        return dict(sorted(counts.items()))

    def as_json(self) -> dict[str, Any]:
        return {"cluster": {"server": self.server, "context": self.context}, "generated": self.generated,
                "by": self.by, "summary": self.summary(), "skipped": self.skipped,
                "containers": [asdict(r) for r in self.rows]}


def assess(obj: Mapping[str, Any], kind: str, *, mode: str,
           resolutions: Mapping[str, Resolution]) -> list[Row]:
    """The rows of one object; pure, so every verdict is testable without a cluster."""
    workload = workloads.of({**obj, "kind": kind})
    target = workload.target
    if target is None:
        return []
    _, found = findings.decided(target, resolutions, Mode.ENFORCE)
    ours = evidence.read_run_as(obj.get("metadata")) if kind == "Pod" else {}
    return [_row(workload, f, target.pod_security_context, mode, resolutions, ours) for f in found]


def _row(workload: workloads.Workload, f: Finding, pod_sc: Mapping[str, Any] | None, mode: str,
         resolutions: Mapping[str, Resolution], ours: Mapping[str, Any]) -> Row:
    image = resolutions.get(f.container.image or "")
    known = image if isinstance(image, ImageUser) else None
    verdict, detail = _verdict(f, known, ours.get(f.name))
    if verdict == "named-user" and workload.kind != "Pod" and mode in ("enforce", "warn"):
        detail += f"; its Pods are patched at admission ({mode} namespace)"
    return Row(
        namespace=workload.namespace, mode=mode, workload=workload.label, container=f.name,
        image=f.container.image or "", digest=known.digest if known else "",
        user=known.user if known else None, run_as_user=f.run_as_user,
        run_as_non_root=policy.effective(f.container, pod_sc, "runAsNonRoot"),
        verdict=verdict, detail=detail,
    )


def _verdict(f: Finding, image: ImageUser | None, record: Any) -> tuple[Verdict, str]:
    fix = f.fix_hint
    if f.outcome == "root":
        return "root", f.detail + fix
    if f.outcome in ("unresolvable", "unavailable"):
        return "unresolvable", f.detail + fix
    if f.outcome == "patch":
        return "named-user", f"USER {f.user} is uid {f.uid}, not set in the manifest{fix}"
    if f.run_as_user is not None and isinstance(record, dict) and record.get("uid") == f.run_as_user:
        user = record.get("user") or (image.user if image else "?")
        return "patched", f"runAsUser {f.run_as_user} set by nonroot-mutator from USER {user}"
    return "fine", f.detail
