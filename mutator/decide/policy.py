"""The decision: containers + what their images run as + mode → patch, warnings or refusal.

Pure. It mirrors the kubelet's runAsNonRoot check (``verifyRunAsNonRoot`` in
``pkg/kubelet/kuberuntime/security_context_others.go``): the effective
``runAsUser`` is the container's, else the pod's; without one the image's USER
decides, split on ``:`` as containerd and CRI-O do; no USER at all means root.
Where the kubelet gives up ("non-numeric user, cannot verify"), we have read the
image's own ``/etc/passwd`` and supply the number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from mutator.decide import admission
from mutator.decide.admission import MAX_WARNING_CHARS, Container, Target
from mutator.decide.images import ImageFailure, ImageUser, Resolution
from mutator.decide.passwd import MAX_ID, split_user
from mutator.errors import UnsafePatch

ROOT_FIX = ("put USER 1000 (any non-zero uid) in the Dockerfile, or set securityContext.runAsUser: 1000"
            " (any non-zero uid)")
ROOT_FIX_SHORT = "fix: USER 1000 or runAsUser: 1000"
RUN_AS_ROOT_FIX = "set a non-zero securityContext.runAsUser, or leave it unset for the image's USER"
RUN_AS_ROOT_FIX_SHORT = "fix: a non-zero runAsUser"
NAME_FIX = ("put a numeric USER (e.g. USER 1000:1000) in the Dockerfile, or set "
            "securityContext.runAsUser")
NAME_FIX_SHORT = "fix: a numeric USER or runAsUser"
_MIN_IMAGE_CHARS = 16  # an image elided below this says nothing; it is dropped instead


class Mode(StrEnum):
    """Chosen per namespace by label; the chart routes each to its own URL path."""

    ENFORCE = "enforce"  # patch; refuse root, unresolvable and unverifiable images
    WARN = "warn"  # patch; allow root with a warning
    AUDIT = "audit"  # never patch; warn with what enforce would do


# What the policy makes of one container; the first three are refusals in enforce mode.
Outcome = Literal["patch", "skip", "root", "unresolvable", "unavailable"]
# What an admission is counted and logged as: "error" when deciding failed on a bug.
Result = Literal["allowed", "patched", "refused", "error"]
PROBLEMS: tuple[Outcome, ...] = ("root", "unresolvable", "unavailable")


@dataclass(frozen=True, slots=True)
class Assessment:
    """What was found for one container: the evidence behind a patch, a warning or a refusal.

    ``outcome`` is one of ``patch``, ``skip``, ``root``, ``unresolvable``,
    ``unavailable``. ``dockerfile`` is the exact numeric ``USER`` line that makes
    the image verifiable by the kubelet without this webhook, when the image's
    user is known and not root (``USER 1000:1000`` for ``USER node``).
    """

    container: Container
    outcome: Outcome
    detail: str = ""  # human reason for root/unresolvable/unavailable
    brief: str = ""  # the reason in a warning's few words, when the detail is long
    uid: int | None = None
    gid: int | None = None
    user: str | None = None  # the image's configured USER, when it was read
    dockerfile: str | None = None

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def image(self) -> str | None:
        return self.container.image

    @property
    def fix(self) -> str:
        """What to change, in full (refusals)."""
        return self._fix(short=False)

    @property
    def fix_short(self) -> str:
        """What to change, in a warning's few words."""
        return self._fix(short=True)

    def _fix(self, *, short: bool) -> str:
        """The one rule for what to change, said in full or (*short*) in a warning's few words."""
        if self.outcome == "root" and self.user is None:  # no USER read: the Pod's own runAsUser is 0
            said = (RUN_AS_ROOT_FIX, RUN_AS_ROOT_FIX_SHORT)
        elif self.outcome == "root":
            said = (ROOT_FIX, ROOT_FIX_SHORT)
        elif self.outcome == "unresolvable":
            said = (NAME_FIX, NAME_FIX_SHORT)
        elif self.outcome == "patch" and self.dockerfile:
            said = (f"or put {self.dockerfile} in the Dockerfile", f"or Dockerfile {self.dockerfile}")
        else:
            return ""
        return said[short]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # JSONPatch operations, built directly: only ``add``s, so no patch library is needed to make them
    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    message: str = ""
    findings: tuple[Assessment, ...] = ()

    @property
    def outcomes(self) -> tuple[tuple[str, Outcome], ...]:
        """(container, outcome) pairs, for metrics and logs."""
        return tuple((f.container.name, f.outcome) for f in self.findings)


def effective(container: Container, pod_sc: Mapping[str, Any] | None, key: str) -> Any:
    """The container's setting, else the pod's: how the kubelet reads securityContext."""
    return effective_in(container.security_context, pod_sc, key)


def effective_in(own_sc: Mapping[str, Any] | None, pod_sc: Mapping[str, Any] | None, key: str) -> Any:
    """:func:`effective` on the two securityContext mappings themselves (either may be absent)."""
    own = (own_sc or {}).get(key)
    return own if own is not None else (pod_sc or {}).get(key)


def images_to_resolve(target: Target) -> list[str]:
    """Images whose user must be looked up: containers with no effective runAsUser."""
    images = {
        c.image
        for c in target.containers
        if c.image and effective(c, target.pod_security_context, "runAsUser") is None
    }
    return sorted(images)


def check_ids(uid: int | None, gid: int | None) -> None:
    """Raise :class:`UnsafePatch` unless uid is in 1..MAX_ID and gid (if any) in 0..MAX_ID.

    The one invariant that must never break: nothing outside the API server's
    range, and never uid 0, is ever patched.
    """
    if type(uid) is not int or not 1 <= uid <= MAX_ID:
        raise UnsafePatch(f"refusing to patch runAsUser={uid!r}: not in 1..{MAX_ID}")
    if gid is not None and (type(gid) is not int or not 0 <= gid <= MAX_ID):
        raise UnsafePatch(f"refusing to patch runAsGroup={gid!r}: not in 0..{MAX_ID}")


def _assess(container: Container, pod_sc: Mapping[str, Any] | None,
            resolutions: Mapping[str, Resolution]) -> Assessment:
    run_as_user = effective(container, pod_sc, "runAsUser")
    if run_as_user is not None:
        if run_as_user == 0:
            return Assessment(container, "root", "its securityContext sets runAsUser: 0",
                           brief="runAsUser: 0")
        return Assessment(container, "skip")
    if container.image is None:
        return Assessment(container, "skip")  # the API server's validation rejects it later
    found = resolutions.get(container.image)
    if found is None:
        return Assessment(container, "unavailable", "its image was not looked up")
    if isinstance(found, ImageFailure):
        outcome = "unavailable" if found.temporary else "unresolvable"
        return Assessment(container, outcome, found.message)
    return _assess_image(container, found)


def _assess_image(container: Container, image: ImageUser) -> Assessment:
    spec = split_user(image.user)
    user = image.user
    if spec is None:
        return Assessment(container, "root", "its image sets no USER", brief="no USER", uid=0, user=user)
    if image.uid is None:
        return Assessment(container, "unresolvable", f"USER {image.user!r}: {image.problem}", user=user)
    if image.uid == 0:
        if spec.user_is_numeric:
            return Assessment(container, "root", f"its image sets USER {image.user!r}",
                           brief=f"USER {image.user!r}", uid=0, gid=image.gid, user=user)
        return Assessment(container, "root", f"its image's USER {spec.user!r} is uid 0 in its /etc/passwd",
                       brief=f"USER {spec.user!r} is uid 0", uid=0, gid=image.gid, user=user)
    if not image.needs_numeric_uid:
        return Assessment(container, "skip", uid=image.uid, gid=image.gid, user=user)  # the kubelet checks it
    try:
        check_ids(image.uid, image.gid)
    except UnsafePatch as exc:
        return Assessment(container, "unresolvable", f"USER {image.user!r}: {exc}", user=user)
    line = f"USER {image.uid}" if image.gid is None else f"USER {image.uid}:{image.gid}"
    return Assessment(container, "patch", uid=image.uid, gid=image.gid, user=user, dockerfile=line)


def patch_fields(finding: Assessment, pod_sc: Mapping[str, Any] | None, mode: Mode) -> dict[str, Any]:
    """The securityContext fields *mode* adds to the container: what the patch and audit say.

    Raises :class:`UnsafePatch` for an id outside the range, whatever the caller checked.
    """
    check_ids(finding.uid, finding.gid)
    container = finding.container
    fields: dict[str, Any] = {"runAsUser": finding.uid}
    if finding.gid and effective(container, pod_sc, "runAsGroup") is None:
        fields["runAsGroup"] = finding.gid
    if mode is Mode.ENFORCE and (container.security_context or {}).get("runAsNonRoot") is None:
        fields["runAsNonRoot"] = True
    return fields


def _ops(finding: Assessment, pod_sc: Mapping[str, Any] | None, mode: Mode) -> list[dict[str, Any]]:
    """The JSONPatch operations for one container; container level, so sidecars don't inherit.

    Only ``add`` operations: the patch can never remove ``runAsNonRoot`` or
    loosen anything already set.
    """
    fields = patch_fields(finding, pod_sc, mode)
    base = f"{finding.container.pointer}/securityContext"
    if finding.container.security_context is None:  # absent (or null): the whole object must be added
        return [{"op": "add", "path": base, "value": fields}]
    return [{"op": "add", "path": f"{base}/{key}", "value": value} for key, value in fields.items()]


def _describe(finding: Assessment) -> str:
    """One container's part of a refusal: no length limit, so everything is said in full."""
    c = finding.container
    image = f" (image {c.image})" if c.image else ""
    if finding.outcome == "root":
        return f'container "{c.name}"{image} would run as root: {finding.detail}; {finding.fix}'
    if finding.outcome == "unresolvable":
        return (f'container "{c.name}"{image} has a user that cannot be verified as non-root: '
                f"{finding.detail}; {finding.fix}")
    return (f'container "{c.name}"{image} could not be checked, this is temporary and the request '
            f"can be retried: {finding.detail}")


def _elide(text: str, keep: int) -> str:
    """Keep the start and the end of *text* (registry and tag say the most), in *keep* characters."""
    if len(text) <= keep:
        return text
    head = (keep - 1) // 2
    return text[:head] + "…" + text[len(text) - (keep - 1 - head):]


def fit(render: Callable[[str, str | None, int], str], *, name: str, image: str | None,
        limit: int = MAX_WARNING_CHARS) -> str:
    """Compose a warning that fits *limit*, dropping the least useful part first.

    ``render(name, image, detail)`` with detail 2 (in full), 1 (brief) or 0
    (none): the full text; then the brief reason, then none; then the image
    elided in the middle; then no image; then, for a name longer than a DNS
    label, the name elided. The verdict and the fix are never dropped.
    """
    for detail in (2, 1, 0):
        text = render(name, image, detail)
        if len(text) <= limit:
            return text
    if image:
        keep = len(image) - (len(text) - limit)
        if keep >= _MIN_IMAGE_CHARS:
            return render(name, _elide(image, keep), 0)
    text = render(name, None, 0)
    if len(text) > limit:
        keep = len(name) - (len(text) - limit)
        text = render(_elide(name, max(keep, 8)), None, 0)
    return admission.clip(text, limit)


def _warning(finding: Assessment, pod_sc: Mapping[str, Any] | None, mode: Mode) -> str:
    if finding.outcome == "patch":
        fields = " ".join(f"{key}={str(value).lower()}" if isinstance(value, bool) else f"{key}={value}"
                          for key, value in patch_fields(finding, pod_sc, Mode.ENFORCE).items())

        def render(name: str, image: str | None, detail: int) -> str:
            shown = f" ({image})" if image else ""
            hint = f"; {finding.fix_short}" if detail else ""  # there is nothing to fix: a bonus
            return f'audit: would set {fields} on container "{name}"{shown}{hint}'
    else:
        verdict = {"root": "runs as root", "unresolvable": "has an unverifiable user",
                   "unavailable": "not checked"}[finding.outcome]
        prefix = "audit: would refuse" if mode is Mode.AUDIT else "nonroot-mutator:"
        fix = f"; {finding.fix_short}" if finding.fix_short else ""

        def render(name: str, image: str | None, detail: int) -> str:
            shown = f" ({image})" if image else ""
            # with no fix to offer (a registry outage), the reason is what the reader needs: kept
            keep = 2 if not fix else detail
            reason = (finding.detail, finding.brief or finding.detail, "")[2 - keep]
            reason = f" ({reason})" if reason else ""
            return f'{prefix} container "{name}"{shown} {verdict}{reason}{fix}'

    return fit(render, name=finding.container.name, image=finding.container.image)


def decide(target: Target, resolutions: Mapping[str, Resolution], mode: Mode) -> Decision:
    """Decide on every container of *target*, given what its images resolved to.

    A refusal carries no patch, even for the containers that resolved.
    """
    pod_sc = target.pod_security_context
    findings = tuple(_assess(c, pod_sc, resolutions) for c in target.containers)
    problems = [f for f in findings if f.outcome in PROBLEMS]
    patched = [f for f in findings if f.outcome == "patch"]

    if mode is Mode.ENFORCE and problems:
        message = "nonroot-mutator refused the pod: " + "; ".join(_describe(f) for f in problems)
        return Decision(allowed=False, message=message, findings=findings)

    warnings = [_warning(f, pod_sc, mode) for f in problems]
    ops: list[dict[str, Any]] = []
    if mode is Mode.AUDIT:
        warnings = [_warning(f, pod_sc, mode) for f in patched] + warnings
    else:
        for finding in patched:
            ops.extend(_ops(finding, pod_sc, mode))
    return Decision(allowed=True, patch=tuple(ops), warnings=tuple(warnings),
                    findings=findings)
