"""What a developer reads: one line per container, within the API server's 120 characters. Pure.

Shared by the apply-time warnings on workloads and ``mutator review``, so the
terminal and ``kubectl apply`` say the same thing. Each line is built from
parts in order of importance (who, what happens, the image, why, the numeric
Dockerfile line) and keeps whatever fits, shortening the image to its last path
component before dropping anything.
"""

from __future__ import annotations

from collections.abc import Iterable

from mutator.decide.admission import MAX_WARNING_CHARS, clip
from mutator.decide.findings import Finding
from mutator.decide.policy import Mode


def verdict(finding: Finding, mode: Mode) -> str:
    """A few words on what will happen to this container's Pods in *mode*."""
    outcome = finding.outcome
    if outcome == "patch":
        if mode is Mode.AUDIT:
            return f"runs as USER {finding.user}, not patched (audit); enforce would set uid {finding.uid}"
        return f"will run as uid {finding.uid}"
    if outcome == "skip":
        return "fine"
    refused = mode is Mode.ENFORCE
    if outcome == "root":
        return "would be refused: runs as root" if refused else "will run as root"
    if outcome == "unresolvable":
        return "would be refused: user not verifiable" if refused else "user not verifiable"
    return "not checked yet, the Pods' admission decides"


def line(prefix: str, finding: Finding, mode: Mode, *, limit: int = MAX_WARNING_CHARS) -> str:
    """``deployment/web: container "app" would be refused: runs as root: nginx:1.25 (no USER); …``.

    The numeric Dockerfile line is worth more than the image's full name: the
    image is shortened, then left out, before the fix is.
    """
    head = f'{prefix}: container "{finding.name}" {verdict(finding, mode)}'
    image = finding.container.image or ""
    reason = f"({finding.detail})" if finding.detail else ""
    fix = finding.fix_hint
    candidates = [(image, fix), (_short(image), fix), ("", fix), (_short(image), ""), ("", "")]
    for shown, tail in candidates:
        why = " ".join(part for part in (shown, reason) if part)
        text = (f"{head}: {why}" if why else head) + tail
        if len(text) <= limit:
            return text
    return clip(head, limit)


def _short(image: str) -> str:
    """``registry:5000/team/app:1.2@sha256:…`` → ``app:1.2``: what a developer recognises."""
    name = image.rsplit("/", 1)[-1]
    return name.split("@", 1)[0]


def warnings(prefix: str, findings: Iterable[Finding], mode: Mode) -> list[str]:
    """One line per container that is not simply fine."""
    return [line(prefix, f, mode) for f in findings if f.outcome != "skip"]
