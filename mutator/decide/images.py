"""What the resolver learned about an image's user: the one value the policy consumes.

Kept in its own module so that the pure policy and the I/O-bound resolver share
a vocabulary without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mutator.decide.passwd import split_user
from mutator.errors import DeadlineExceeded, ImageError


@dataclass(frozen=True, slots=True)
class ImageUser:
    """An image whose configured USER was read; ``uid`` is ``None`` when it named nobody.

    ``uid``/``gid`` are what the runtime would run the container as. An image
    with no USER runs as root (uid 0), as the kubelet assumes.
    """

    image: str
    reference: str
    digest: str
    user: str
    uid: int | None
    gid: int | None
    problem: str | None = None  # why uid is None: a name the image's files lack
    user_layer: str | None = None  # digest of the layer whose /etc/passwd defined a named user

    @property
    def runs_as_root(self) -> bool:
        return self.uid == 0

    @property
    def needs_numeric_uid(self) -> bool:
        """True when the kubelet cannot verify the user itself: USER names a user."""
        spec = split_user(self.user)
        return spec is not None and not spec.user_is_numeric

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "image": self.image,
            "reference": self.reference,
            "digest": self.digest,
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "runs_as_root": self.runs_as_root,
        }
        if self.user_layer:
            data["user_layer"] = self.user_layer
        if self.problem:
            data["error"] = self.problem
        return data


@dataclass(frozen=True, slots=True)
class ImageFailure:
    """The image could not be looked up; ``temporary`` when a retry may succeed."""

    image: str
    message: str
    temporary: bool
    cause: type[ImageError] | None = field(default=None, compare=False)  # what went wrong, by type

    @classmethod
    def of(cls, image: str, error: ImageError) -> ImageFailure:
        """The failure *error* describes: its message, whether it is temporary, and its type."""
        return cls(image, str(error), temporary=error.temporary, cause=type(error))

    @property
    def past_deadline(self) -> bool:
        """True when no answer came before the admission's deadline (a lookup or an access check)."""
        return self.cause is not None and issubclass(self.cause, DeadlineExceeded)

    def as_json(self) -> dict[str, object]:
        return {"image": self.image, "error": self.message, "temporary": self.temporary}


Resolution = ImageUser | ImageFailure
