"""Image reference parsing, normalised the way the container runtimes do it.

The kubelet hands the runtime the image string from the Pod unchanged, and the
runtime normalises it (``nginx`` → ``docker.io/library/nginx:latest``). We must
look up exactly the image the runtime will pull, so this mirrors the grammar of
the distribution project's ``reference`` package, not a looser one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mutator.errors import InvalidReference

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_HUB_NAMES = frozenset({"index.docker.io", "registry-1.docker.io"})

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Reference:
    """A fully qualified image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest wins over the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def validate_digest(digest: str) -> str:
    """Check that *digest* is ``algorithm:hex`` with an algorithm we can verify."""
    algorithm, _, hexpart = digest.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidReference(f"unsupported digest algorithm {algorithm!r} in {digest!r}")
    if len(hexpart) != expected or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise InvalidReference(f"malformed {algorithm} digest {digest!r}")
    return digest


def parse(text: str) -> Reference:
    """Parse and normalise an image reference as containerd and CRI-O do.

    A first path component is a registry only if it contains ``.`` or ``:`` or is
    ``localhost``; otherwise the image lives on Docker Hub, where one-component
    names belong to ``library/``. With neither tag nor digest the tag is
    ``latest``; with both, the digest decides what is pulled.
    """
    if not isinstance(text, str) or not text:
        raise InvalidReference("empty image reference")
    match = _REFERENCE_RE.match(text)
    if match is None:
        raise InvalidReference(f"invalid image reference {text!r}")
    name, tag, digest = match.group("name"), match.group("tag"), match.group("digest")
    if len(name) > _MAX_NAME_LENGTH:
        raise InvalidReference(f"image name longer than {_MAX_NAME_LENGTH} characters: {text!r}")
    if digest is not None:
        validate_digest(digest)

    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        registry, repository = DOCKER_HUB, name
    else:
        registry, repository = first, rest
    if registry in _LEGACY_HUB_NAMES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if repository != repository.lower():
        raise InvalidReference(f"repository name must be lowercase: {text!r}")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)
