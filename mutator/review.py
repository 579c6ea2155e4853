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
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import yaml

from mutator import admission, findings, manifests, policy, webhook, workloads
from mutator.config import Config
from mutator.errors import BadInput, BadReview
from mutator.findings import Finding
from mutator.images import Resolution
from mutator.policy import Mode
from mutator.resolver import Resolver
from mutator.session import with_resolver

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2
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
        return f"{str(self.item.obj.get('kind') or '?').lower()}/{name or '?'}"


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
    if finding.outcome == "skip":
        return "fine"
    if finding.outcome == "patch":
        return "would patch" if mode is Mode.AUDIT else "patch"
    return "refused" if mode is Mode.ENFORCE else "warned"


def reason(finding: Finding) -> str:
    fix = f"; Dockerfile: {finding.fix}" if finding.fix else ""
    return f"{finding.detail}{fix}"


def table(results: Sequence[Reviewed], mode: Mode) -> str:
    rows: list[tuple[str, ...]] = [COLUMNS]
    for result in results:
        if result.workload is None:
            kind = result.item.obj.get("kind")
            rows.append((result.label, "-", "-", "-", "skipped", "-", f"kind {kind} makes no Pods"))
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
    deadline = asyncio.get_running_loop().time() + budget
    resolutions = await resolver.resolve(images, deadline=deadline) if images else {}
    for result in results:
        if result.workload is not None and result.workload.target is not None:
            decide(result, result.workload.target, resolutions, mode)
    return results


def decide(result: Reviewed, target: admission.Target, resolutions: dict[str, Resolution],
            mode: Mode) -> None:
    """Fill *result* with the findings in *mode* and the fix (ops relative to its document)."""
    decision = policy.decide(target, resolutions, mode)
    result.findings = findings.collect(target, resolutions, decision)
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
                         budget: float) -> int:
    outcome = await webhook.handle(admission.validate(document), mode=mode, resolver=resolver,
                                   deadline=webhook.deadline_for(budget))
    print(json.dumps(outcome.response, indent=2))
    return EXIT_OK if outcome.response["response"]["allowed"] else EXIT_REFUSED


def run(args: argparse.Namespace, config: Config) -> int:
    """The command; errors in the input are reported on stderr with exit 2."""
    mode = Mode(args.mode)
    budget = config.default_admission_timeout_seconds
    try:
        sources = [manifests.load(path) for path in manifests.files(args.paths)]
        review_document = _admission_review(sources[0]) if len(sources) == 1 else None
        if review_document is not None:
            return asyncio.run(with_resolver(config, lambda resolver: _answer_review(
                review_document, resolver=resolver, mode=mode, budget=budget), credentials=args.credentials))
        items = list(manifests.items(sources))
        if not items:
            raise BadInput("no manifests in the input")
        results = asyncio.run(with_resolver(config, lambda resolver: assess(
            items, resolver=resolver, mode=mode, budget=budget), credentials=args.credentials))
    except (BadInput, BadReview) as exc:
        print(f"mutator review: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    refused = mode is Mode.ENFORCE and any(f.problem for r in results for f in r.findings)
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
