"""Per-container findings: what the policy decided, with the facts behind it. Pure.

Warnings at apply time, ``mutator review``, the audit annotations and
``mutator report`` need the policy's findings (outcome, short reason, USER,
uid/gid, the numeric Dockerfile line) together with what only the resolver
knows: the image digest and the layer that defined the user, and the
effective ``runAsUser`` the manifest already sets. This adapter joins them, so
the policy stays the only place that decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mutator.decide import policy
from mutator.decide.admission import Container, Target
from mutator.decide.images import ImageUser, Resolution
from mutator.decide.policy import PROBLEMS, Decision, Outcome, effective

# For an image that runs as root there is no uid to name: this is the line we suggest.
EXAMPLE_FIX = "USER 1000:1000"


@dataclass(frozen=True, slots=True)
class Finding:
    """One container: the policy's outcome and why, in facts a human or an auditor can check.

    ``outcome`` is the policy's: ``patch``, ``skip``, ``root``, ``unresolvable``
    or ``unavailable``. ``fix`` is the numeric Dockerfile line: exact for a
    named user we resolved, an example for an image that runs as root.
    """

    container: Container
    outcome: Outcome
    detail: str
    user: str | None = None  # the image's USER; None when the image was not read
    uid: int | None = None
    gid: int | None = None
    digest: str | None = None
    user_layer: str | None = None
    run_as_user: Any = None  # the effective runAsUser the manifest already sets
    fix: str | None = None

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def fix_hint(self) -> str:
        """``; Dockerfile: USER 1000:1000`` after a reason, or nothing: how every reader is told the
        numeric line (warnings at apply, ``mutator review``, ``mutator report``)."""
        return f"; Dockerfile: {self.fix}" if self.fix else ""

    @property
    def problem(self) -> bool:
        return self.outcome in PROBLEMS

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "container": self.container.name, "image": self.container.image, "outcome": self.outcome,
            "user": self.user, "uid": self.uid, "gid": self.gid, "digest": self.digest,
            "detail": self.detail,
        }
        if self.fix:
            data["fix"] = self.fix
        return data


def decided(target: Target, resolutions: Mapping[str, Resolution],
            mode: policy.Mode) -> tuple[Decision, tuple[Finding, ...]]:
    """The decision on *target* and one finding per container: the core every path shares
    (an admission, the workload warnings, ``mutator review`` and ``mutator report``)."""
    decision = policy.decide(target, resolutions, mode)
    return decision, tuple(collect(target, resolutions, decision))


def collect(target: Target, resolutions: Mapping[str, Resolution], decision: Decision) -> list[Finding]:
    """One finding per container of *target*, in order, for *decision* made on it.

    The policy's own findings say what was decided and why (its short reason,
    its numeric Dockerfile line); the resolutions add what an auditor also
    needs: the digest that was read, and the layer that defined the user.
    """
    if len(decision.findings) != len(target.containers):
        raise AssertionError("the decision does not cover the target's containers")
    return [_finding(found, target.pod_security_context, resolutions) for found in decision.findings]


def _finding(found: policy.Assessment, pod_sc: Mapping[str, Any] | None,
             resolutions: Mapping[str, Resolution]) -> Finding:
    container = found.container
    run_as_user = effective(container, pod_sc, "runAsUser")
    resolved = resolutions.get(container.image) if container.image and run_as_user is None else None
    image = resolved if isinstance(resolved, ImageUser) else None
    if found.brief or found.detail:
        detail = found.brief or found.detail
    elif run_as_user is not None:
        detail = f"runAsUser {run_as_user} set"
    elif found.user is not None:
        detail = f"USER {found.user}"
    else:
        detail = "no image" if not container.image else ""
    # A root or unverifiable USER needs a new numeric one; an image that could not be read needs none.
    needs_user = found.outcome == "root" or (found.outcome == "unresolvable" and found.user is not None)
    fix = found.dockerfile or (EXAMPLE_FIX if needs_user else None)
    return Finding(
        container, found.outcome, detail,
        user=image.user if image else found.user,
        uid=image.uid if image else found.uid,
        gid=image.gid if image else found.gid,
        digest=image.digest if image else None,
        # The layer that defined the user, where the resolver reports it.
        user_layer=getattr(image, "user_layer", None),
        run_as_user=run_as_user,
        fix=fix,
    )
