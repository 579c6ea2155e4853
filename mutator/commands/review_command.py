"""``mutator review``: what the cluster would do to anything a developer applies, offline.

Takes Pods, every kind that makes Pods, ``List`` objects, multi-document YAML
(``helm template … | mutator review -``) and directories, decides on each pod
template exactly as the webhook would (same resolver, same policy), and prints
a table, JSON or YAML. ``--fix`` prints the manifests back with the numeric
``runAsUser``/``runAsGroup`` where the webhook would patch them, so the
manifest no longer depends on the webhook. An AdmissionReview is still
answered with the AdmissionReview response, as before.

Exit codes: 0 all fine, 1 something would be refused, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import yaml

from mutator import logs
from mutator.commands import manifests
from mutator.config import Config
from mutator.decide import admission, findings, policy, workloads
from mutator.decide.findings import Finding
from mutator.decide.images import Resolution
from mutator.decide.policy import Mode
from mutator.errors import BadInput, BadReview
from mutator.resolve.registry import local
from mutator.resolve.resolver import Resolver
from mutator.resolve.standalone import with_resolver
from mutator.serve import pipeline

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2
INVALID = "invalid"  # a container the API server itself rejects, in every mode
MAX_ID = 2147483647
COLUMNS = ("WORKLOAD", "CONTAINER", "IMAGE", "USER", "VERDICT", "UID/GID", "REASON")


@dataclass(slots=True)
class Reviewed:
    """One object of the input and what the webhook would do with its Pods."""

    item: manifests.Item
    workload: workloads.Workload | None  # None: a kind that makes no Pods (skipped)
    findings: list[Finding] = field(default_factory=list)
    fix: list[dict[str, Any]] = field(default_factory=list)  # ops relative to item.document

    @property
    def label(self) -> str:
        if self.workload is not None:
            return self.workload.label
        metadata = self.item.obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        kind = self.item.obj.get("kind")
        if not kind or not name:  # not a Kubernetes object: the file says where it is
            return f"{str(kind or '?').lower()}/{name or '?'} ({self.item.source})"
        return f"{str(kind).lower()}/{name}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.ENFORCE.value,
                        help="the namespace mode to decide as (default: %(default)s)")
    parser.add_argument("--config", metavar="PATH", help="YAML config file (default: $MUTATOR_CONFIG)")
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                        help="output format (default: %(default)s)")
    parser.add_argument("--fix", action="store_true",
                        help="print the manifests back with numeric runAsUser/runAsGroup added "
                             "(the table goes to stderr)")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="file, directory (recursive *.yaml/*.yml/*.json) or - for standard input")


def verdict(finding: Finding, mode: Mode) -> str:
    if finding.outcome in ("skip", INVALID):
        return "fine" if finding.outcome == "skip" else INVALID
    if finding.outcome == "patch":
        return "would patch" if mode is Mode.AUDIT else "patch"
    if finding.outcome == "unavailable":  # as the server says: not checked, and worth a retry
        return "unavailable"
    return "refused" if mode is Mode.ENFORCE else "warned"


def reason(finding: Finding) -> str:
    temporary = "temporary: " if finding.outcome == "unavailable" else ""
    return f"{temporary}{finding.detail}{finding.fix_hint}"


def _invalid(container: admission.Container, pod_sc: Any) -> str | None:
    """Why the API server would reject *container* whatever the webhook does; None when it would not."""
    if not container.image:
        return "no image: the API server requires one"
    for key in ("runAsUser", "runAsGroup"):
        value = policy.effective(container, pod_sc, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_ID):
            return f"{key} {value} is not an id in 0..{MAX_ID}: the API server rejects it"
    return None


def table(results: Sequence[Reviewed], mode: Mode) -> str:
    rows: list[tuple[str, ...]] = [COLUMNS]
    for result in results:
        if result.workload is None:
            kind = result.item.obj.get("kind")
            why = f"kind {kind} makes no Pods" if kind else "not a Kubernetes object (no kind)"
            rows.append((result.label, "-", "-", "-", "skipped", "-", why))
            continue
        if not result.findings:
            rows.append((result.label, "-", "-", "-", "fine", "-", "no containers to check"))
        for f in result.findings:
            ids = "-" if f.uid is None else f"{f.uid}:{f.gid}" if f.gid is not None else str(f.uid)
            user = "-" if f.user is None else (f.user or '""')
            rows.append((result.label, f.name, f.container.image or "-", user, verdict(f, mode), ids,
                         reason(f)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ).rstrip() + "\n"


def as_data(results: Sequence[Reviewed], mode: Mode) -> dict[str, Any]:
    workloads_, skipped = [], []
    for result in results:
        where = {"source": result.item.source, "workload": result.label}
        if result.workload is None:
            skipped.append({**where, "kind": result.item.obj.get("kind")})
            continue
        containers = [{**f.as_json(), "verdict": verdict(f, mode)} for f in result.findings]
        workloads_.append({**where, "namespace": result.workload.namespace, "containers": containers})
    # plain types: the manifests' strings are ruamel's own str subclasses
    return json.loads(json.dumps({"mode": mode.value, "workloads": workloads_, "skipped": skipped}))


async def assess(items: Sequence[manifests.Item], *, resolver: Resolver, mode: Mode,
                 budget: float) -> list[Reviewed]:
    """Decide on every item's pod template; one resolver pass for all images."""
    results: list[Reviewed] = []
    for item in items:
        if not workloads.supported(item.obj.get("kind")):
            results.append(Reviewed(item, None))
            continue
        try:
            results.append(Reviewed(item, workloads.of(item.obj)))
        except BadReview as exc:
            raise BadInput(f"{item.source}: {exc}") from None
    targets = [r.workload.target for r in results if r.workload is not None and r.workload.target]
    images = sorted({image for t in targets for image in policy.images_to_resolve(t)})
    resolver.local.update(local.open_all(images))  # oci:DIR, docker-archive:FILE: read offline
    deadline = asyncio.get_running_loop().time() + budget
    resolutions = await resolver.resolve(images, deadline=deadline) if images else {}
    for result in results:
        if result.workload is not None and result.workload.target is not None:
            decide(result, result.workload.target, resolutions, mode)
    return results


def decide(result: Reviewed, target: admission.Target, resolutions: dict[str, Resolution],
            mode: Mode) -> None:
    """Fill *result* with the findings in *mode* and the fix (ops relative to its document)."""
    decision, found = findings.decided(target, resolutions, mode)
    result.findings = [
        dataclasses.replace(f, outcome=INVALID, detail=why, fix=None) if why else f
        for f in found
        for why in (_invalid(f.container, target.pod_security_context),)
    ]
    # The fix is the patch warn mode makes (runAsUser/runAsGroup), whatever --mode says.
    fixing = decision if mode is Mode.WARN else policy.decide(target, resolutions, Mode.WARN)
    result.fix = [{**op, "path": result.item.pointer + op["path"]} for op in fixing.patch]


def _admission_review(source: manifests.Source) -> dict[str, Any] | None:
    if len(source.documents) == 1 and isinstance(source.documents[0], dict) \
            and source.documents[0].get("kind") == admission.KIND:
        # plain JSON types, as the API server would send it
        return json.loads(json.dumps(source.documents[0]))
    return None


async def _answer_review(document: dict[str, Any], *, resolver: Resolver, mode: Mode,
                         budget: float, output: str) -> int:
    outcome = await pipeline.handle(admission.validate(document), mode=mode, resolver=resolver,
                                   deadline=pipeline.deadline_for(budget))
    print(yaml.safe_dump(outcome.response, sort_keys=False).rstrip() if output == "yaml"
          else json.dumps(outcome.response, indent=2))
    return EXIT_OK if outcome.response["response"]["allowed"] else EXIT_REFUSED


def run(args: argparse.Namespace, config: Config) -> int:
    """The command; errors in the input are reported on stderr with exit 2."""
    level = logs.log.level
    if not getattr(args, "verbose", False):  # the table already says which lookup failed, and why
        logs.log.setLevel(logging.ERROR)
    try:
        return _run(args, config)
    finally:  # for whoever runs more than this command in the process
        logs.log.setLevel(level)


def _run(args: argparse.Namespace, config: Config) -> int:
    mode = Mode(args.mode)
    budget = config.default_admission_timeout_seconds
    try:
        sources = [manifests.load(path) for path in manifests.files(args.paths)]
        review_document = _admission_review(sources[0]) if len(sources) == 1 else None
        if review_document is not None:
            if args.fix:
                raise BadInput(f"{sources[0].path}: --fix rewrites manifests; an AdmissionReview is "
                               "answered with its AdmissionReview response (-o json or yaml)")
            return asyncio.run(with_resolver(config, lambda resolver: _answer_review(
                review_document, resolver=resolver, mode=mode, budget=budget, output=args.output),
                credentials=args.credentials))
        items = list(manifests.items(sources))
        if not items:
            raise BadInput("no manifests in the input")
        results = asyncio.run(with_resolver(config, lambda resolver: assess(
            items, resolver=resolver, mode=mode, budget=budget), credentials=args.credentials))
    except (BadInput, BadReview) as exc:
        print(f"mutator review: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    found = [f for r in results for f in r.findings]
    refused = any(f.outcome == INVALID for f in found) or (
        mode is Mode.ENFORCE and any(f.problem for f in found))
    report = sys.stderr if args.fix else sys.stdout
    if args.output == "table":
        report.write(table(results, mode))
    else:
        data = as_data(results, mode)
        report.write(json.dumps(data, indent=2) + "\n" if args.output == "json"
                     else yaml.safe_dump(data, sort_keys=False))
    if args.fix:
        for result in results:
            if result.fix:
                jsonpatch.apply_patch(result.item.document, result.fix, in_place=True)
        sys.stdout.write(manifests.dump(sources))
    return EXIT_REFUSED if refused else EXIT_OK
