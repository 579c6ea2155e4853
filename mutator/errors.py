"""Every exception the webhook raises on purpose, in one place.

The hierarchy separates what the *caller* got wrong (a bad review, a bad image
reference) from what the *registry* did (transient or permanent), because the
admission decision treats them differently: a bad request is an HTTP 400, a
registry failure goes through the namespace's failure policy.
"""

from __future__ import annotations


class MutatorError(Exception):
    """Base of all errors raised by nonroot-mutator."""


class ConfigError(MutatorError):
    """The configuration file is unreadable or has a wrong value."""


class BadReview(MutatorError):
    """The AdmissionReview is malformed; answered with HTTP 400 and this reason."""


class InvalidReference(MutatorError):
    """An image reference that does not parse the way the container runtimes parse it."""


class ImageError(MutatorError):
    """The image could not be resolved to a user.

    ``temporary`` tells the policy whether retrying may help: a registry that is
    down or slow is temporary; an image whose manifest is malformed is not.
    """

    temporary: bool = False


class RegistryError(ImageError):
    """The registry answered with an error status or an unusable document."""

    def __init__(self, message: str, *, status: int | None = None, temporary: bool = False):
        super().__init__(message)
        self.status = status
        self.temporary = temporary


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, or did not answer in time."""

    def __init__(self, message: str):
        super().__init__(message, temporary=True)


class DigestMismatch(RegistryError):
    """Content did not hash to the digest that addressed it."""


class UnsupportedImage(ImageError):
    """The image uses a format this version cannot read (e.g. a layer media type)."""


class UnresolvableUser(ImageError):
    """The image's USER cannot be turned into ids the node would really use; not temporary."""


class UserNotFound(UnresolvableUser):
    """The USER names a user or group that the image's own files do not define."""


class InvalidUserSpec(UnresolvableUser):
    """A USER part is a number outside 0..2147483647: invalid, and never looked up as a name."""


class InvalidAccountEntry(UnresolvableUser):
    """The passwd/group line a lookup hits has an id field the node would misread (e.g. as 0)."""


class UnsafePatch(MutatorError):
    """A patch would set an id outside 1..2147483647; the policy refuses instead of patching it."""


class DeadlineExceeded(ImageError):
    """The answer could not be found before the admission deadline."""

    temporary = True


class CredentialProviderError(MutatorError):
    """A kubelet credential provider plugin failed or answered badly; the next credential source is tried."""


class ScanLimitExceeded(ImageError):
    """Reading the layers would pass ``max_scan_bytes``: a decompression bomb, or a huge image."""


class UnreadableAccountFile(ImageError):
    """``/etc/passwd`` or ``/etc/group`` cannot be read the way the runtime reads it.

    A dangling or looping link, a FIFO or device in its place, a file over the
    size limit, or a search that would have to pass a layer we do not fetch.
    """


class KubeError(MutatorError):
    """The Kubernetes API server refused or failed a request; ``status`` is its HTTP status."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class BadInput(MutatorError):
    """A file or stream given to a command cannot be read as manifests: not UTF-8, too large, not YAML."""


class ClusterUnreachable(MutatorError):
    """``mutator report`` could not load a kubeconfig or read from the API server."""
