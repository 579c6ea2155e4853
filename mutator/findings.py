"""Per-container findings: what the policy decided, with the facts behind it. Pure.

Warnings at apply time, ``mutator review``, the audit annotations and
``mutator report`` all need more than :class:`~mutator.policy.Decision` gives
(the outcome per container name): the image's USER, digest, uid/gid and the
numeric ``USER`` line that would fix the Dockerfile. This adapter joins the
decision with what the resolver returned, so the policy stays the only place
that decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mutator.admission import Container, Target
from mutator.images import ImageFailure, ImageUser, Resolution
from mutator.policy import Decision

PROBLEMS = ("root", "unresolvable", "unavailable")
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
    outcome: str
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


def effective(container: Container, pod_sc: Mapping[str, Any] | None, key: str) -> Any:
    """The container's setting, else the pod's: how the kubelet reads securityContext."""
    own = (container.security_context or {}).get(key)
    return own if own is not None else (pod_sc or {}).get(key)


def numeric_line(uid: int, gid: int | None) -> str:
    return f"USER {uid}:{gid}" if gid is not None else f"USER {uid}"


def collect(target: Target, resolutions: Mapping[str, Resolution], decision: Decision) -> list[Finding]:
    """One finding per container of *target*, in order, for *decision* made on it."""
    outcomes: Sequence[tuple[str, str]] = decision.outcomes
    if len(outcomes) != len(target.containers):
        raise AssertionError("the decision does not cover the target's containers")
    return [
        _finding(container, outcome, target.pod_security_context, resolutions)
        for container, (_, outcome) in zip(target.containers, outcomes, strict=True)
    ]


def _finding(container: Container, outcome: str, pod_sc: Mapping[str, Any] | None,
             resolutions: Mapping[str, Resolution]) -> Finding:
    run_as_user = effective(container, pod_sc, "runAsUser")
    if run_as_user is not None:
        if outcome == "root":
            return Finding(container, outcome, "runAsUser: 0", run_as_user=run_as_user, fix=EXAMPLE_FIX)
        return Finding(container, outcome, f"runAsUser {run_as_user} set", run_as_user=run_as_user)
    found = resolutions.get(container.image) if container.image else None
    if found is None:
        return Finding(container, outcome, "no image" if not container.image else "not looked up")
    if isinstance(found, ImageFailure):
        return Finding(container, outcome, found.message)
    facts = _facts(found)
    if outcome == "patch":
        assert found.uid is not None
        return Finding(container, outcome, f"USER {found.user}", **facts,
                       fix=numeric_line(found.uid, found.gid))
    if outcome == "root":
        detail = "no USER" if not found.user else (
            f"USER {found.user}" if found.user.split(":")[0].isdigit()
            else f"USER {found.user} is uid 0"
        )
        return Finding(container, outcome, detail, **facts, fix=EXAMPLE_FIX)
    if outcome == "unresolvable":
        return Finding(container, outcome, found.problem or f"USER {found.user}", **facts,
                       fix=EXAMPLE_FIX)
    return Finding(container, outcome, f"USER {found.user}", **facts)


def _facts(image: ImageUser) -> dict[str, Any]:
    return {
        "user": image.user, "uid": image.uid, "gid": image.gid, "digest": image.digest,
        # The layer that defined the user, where the resolver reports it.
        "user_layer": getattr(image, "user_layer", None),
    }
