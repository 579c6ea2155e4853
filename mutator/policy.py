"""The decision: containers + what their images run as + mode → patch, warnings or refusal.

Pure. It mirrors the kubelet's runAsNonRoot check (``verifyRunAsNonRoot`` in
``pkg/kubelet/kuberuntime/security_context_others.go``): the effective
``runAsUser`` is the container's, else the pod's; without one the image's USER
decides, split on ``:`` as containerd and CRI-O do; no USER at all means root.
Where the kubelet gives up ("non-numeric user, cannot verify"), we have read the
image's own ``/etc/passwd`` and supply the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import jsonpatch

from mutator.admission import Container, Target
from mutator.images import ImageFailure, ImageUser, Resolution
from mutator.passwd import split_user

FIX = "set USER to a non-zero uid (e.g. USER 1000) in the Dockerfile, or set securityContext.runAsUser"


class Mode(StrEnum):
    """Chosen per namespace by label; the chart routes each to its own URL path."""

    ENFORCE = "enforce"  # patch; refuse root, unresolvable and unverifiable images
    WARN = "warn"  # patch; allow root with a warning
    AUDIT = "audit"  # never patch; warn with what enforce would do


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    patch: jsonpatch.JsonPatch = field(default_factory=lambda: jsonpatch.JsonPatch([]))
    warnings: tuple[str, ...] = ()
    message: str = ""
    # per-container outcome for metrics and logs: patched/root/unresolvable/unavailable/skipped
    outcomes: tuple[tuple[str, str], ...] = ()


def _effective(container: Container, pod_sc: Mapping[str, Any] | None, key: str) -> Any:
    own = (container.security_context or {}).get(key)
    return own if own is not None else (pod_sc or {}).get(key)


def images_to_resolve(target: Target) -> list[str]:
    """Images whose user must be looked up: containers with no effective runAsUser."""
    images = {
        c.image
        for c in target.containers
        if c.image and _effective(c, target.pod_security_context, "runAsUser") is None
    }
    return sorted(images)


@dataclass(frozen=True, slots=True)
class _Finding:
    container: Container
    outcome: str  # "patch" | "root" | "unresolvable" | "unavailable" | "skip"
    detail: str = ""  # human reason for root/unresolvable/unavailable
    uid: int | None = None
    gid: int | None = None


def _assess(container: Container, pod_sc: Mapping[str, Any] | None,
            resolutions: Mapping[str, Resolution]) -> _Finding:
    run_as_user = _effective(container, pod_sc, "runAsUser")
    if run_as_user is not None:
        if run_as_user == 0:
            return _Finding(container, "root", "its securityContext sets runAsUser: 0")
        return _Finding(container, "skip")
    if container.image is None:
        return _Finding(container, "skip")  # the API server's validation rejects it later
    found = resolutions.get(container.image)
    if found is None:
        return _Finding(container, "unavailable", "its image was not looked up")
    if isinstance(found, ImageFailure):
        outcome = "unavailable" if found.temporary else "unresolvable"
        return _Finding(container, outcome, found.message)
    return _assess_image(container, found)


def _assess_image(container: Container, image: ImageUser) -> _Finding:
    spec = split_user(image.user)
    if spec is None:
        return _Finding(container, "root", "its image sets no USER")
    if image.uid is None:
        return _Finding(container, "unresolvable", f"USER {image.user!r}: {image.problem}")
    if image.uid == 0:
        if spec.user_is_numeric:
            return _Finding(container, "root", f"its image sets USER {image.user!r}")
        return _Finding(
            container, "root", f"its image's USER {spec.user!r} is uid 0 in its /etc/passwd"
        )
    if not image.needs_numeric_uid:
        return _Finding(container, "skip")  # a numeric non-root uid: the kubelet verifies it
    return _Finding(container, "patch", uid=image.uid, gid=image.gid)


def _ops(finding: _Finding, pod_sc: Mapping[str, Any] | None, mode: Mode) -> list[dict[str, Any]]:
    """The JSONPatch operations for one container; container level, so sidecars don't inherit.

    Only ``add`` operations: the patch can never remove ``runAsNonRoot`` or
    loosen anything already set.
    """
    uid = finding.uid
    if uid is None or uid <= 0:  # the one invariant that must never break
        raise AssertionError(f"refusing to patch runAsUser={uid!r}")
    container = finding.container
    own = container.security_context
    fields: dict[str, Any] = {"runAsUser": uid}
    if finding.gid and _effective(container, pod_sc, "runAsGroup") is None:
        fields["runAsGroup"] = finding.gid
    if mode is Mode.ENFORCE and (own or {}).get("runAsNonRoot") is None:
        fields["runAsNonRoot"] = True
    base = f"{container.pointer}/securityContext"
    if own is None:  # absent (or null): the whole object must be added
        return [{"op": "add", "path": base, "value": fields}]
    return [{"op": "add", "path": f"{base}/{key}", "value": value} for key, value in fields.items()]


def _describe(finding: _Finding) -> str:
    c = finding.container
    image = f" (image {c.image})" if c.image else ""
    if finding.outcome == "root":
        return f'container "{c.name}"{image} would run as root: {finding.detail}; {FIX}'
    if finding.outcome == "unresolvable":
        return (
            f'container "{c.name}"{image} has a user that cannot be verified as non-root: '
            f"{finding.detail}; {FIX}"
        )
    return (
        f'container "{c.name}"{image} could not be checked, this is temporary and the request '
        f"can be retried: {finding.detail}"
    )


def _warning(finding: _Finding, mode: Mode) -> str:
    c = finding.container
    if finding.outcome == "patch":
        group = f" runAsGroup={finding.gid}" if finding.gid else ""
        return f'audit: would set runAsUser={finding.uid}{group} on container "{c.name}"'
    short = {
        "root": f"runs as root ({finding.detail})",
        "unresolvable": f"unverifiable user ({finding.detail})",
        "unavailable": f"unchecked ({finding.detail})",
    }[finding.outcome]
    prefix = "audit: would refuse" if mode is Mode.AUDIT else "nonroot-mutator:"
    return f'{prefix} container "{c.name}" {short}'


def decide(target: Target, resolutions: Mapping[str, Resolution], mode: Mode) -> Decision:
    """Decide on every container of *target*, given what its images resolved to."""
    pod_sc = target.pod_security_context
    findings = [_assess(c, pod_sc, resolutions) for c in target.containers]
    outcomes = tuple((f.container.name, f.outcome) for f in findings)
    problems = [f for f in findings if f.outcome in ("root", "unresolvable", "unavailable")]
    patched = [f for f in findings if f.outcome == "patch"]

    if mode is Mode.ENFORCE and problems:
        message = "nonroot-mutator refused the pod: " + "; ".join(_describe(f) for f in problems)
        return Decision(allowed=False, message=message, outcomes=outcomes)

    warnings = [_warning(f, mode) for f in problems]
    ops: list[dict[str, Any]] = []
    if mode is Mode.AUDIT:
        warnings = [_warning(f, mode) for f in patched] + warnings
    else:
        for finding in patched:
            ops.extend(_ops(finding, pod_sc, mode))
    return Decision(
        allowed=True, patch=jsonpatch.JsonPatch(ops), warnings=tuple(warnings), outcomes=outcomes
    )
