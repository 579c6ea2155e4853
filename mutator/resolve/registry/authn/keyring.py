"""Registry credentials and which of them apply to an image, matched as the kubelet matches them.

A node decides which credentials to offer a registry by matching the image name
against the keys of a Docker config (``pkg/credentialprovider/keyring.go``). We
must offer the same credentials the node would, or we would read a different
image than the one it pulls, or fail to read one it can. So the rules are the
kubelet's:

* a key may carry a scheme (dropped) and a path (``/v1/`` and ``/v2/`` count as
  none); a key's path must be a prefix of the image's repository path;
* a host matches label by label, each label a glob (``*.example.com`` matches
  ``a.example.com``, not ``a.b.example.com``); the number of labels and the
  port must be equal;
* Docker Hub has many names: ``docker.io``, ``index.docker.io`` and
  ``registry-1.docker.io`` are one registry;
* every matching entry is returned, the most specific first (the longest path,
  then exact labels before wildcards), so the caller can try each in turn, as
  the kubelet does when credentials rotate.

This module is pure: no I/O, no clock. Secrets never leave it through
``repr``/``str``; a :attr:`Credential.fingerprint` names one in logs and cache keys.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB = "docker.io"
# A per-process key: fingerprints are stable for this process's caches and logs,
# and a short, weak password cannot be recovered from a log by trying guesses.
_FINGERPRINT_KEY = os.urandom(32)


@dataclass(frozen=True, slots=True)
class Credential:
    """One way to authenticate to a registry; all fields empty means anonymous."""

    username: str = ""
    password: str = field(default="", repr=False)
    # docker config ``identitytoken``: an OAuth2 refresh token for the token realm
    identity_token: str = field(default="", repr=False)
    # docker config ``registrytoken``: a bearer token sent as-is
    registry_token: str = field(default="", repr=False)
    # where it came from, for logs (``secret ns/name``, ``plugin ecr``, ``docker-config PATH``)
    source: str = ""

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    @property
    def fingerprint(self) -> str:
        """A short keyed hash of the secret material: equal for equal credentials, never reversible.

        ``"anonymous"`` for a credential without any material.
        """
        if self.anonymous:
            return "anonymous"
        material = "\0".join((self.username, self.password, self.identity_token, self.registry_token))
        return hmac.new(_FINGERPRINT_KEY, material.encode(), hashlib.sha256).hexdigest()[:16]

    def __str__(self) -> str:
        if self.anonymous:
            who = "anonymous"
        elif self.identity_token or self.registry_token:
            who = "identity token" if self.identity_token else "registry token"
        else:
            who = f"user {self.username!r}"
        return f"{who} from {self.source or 'unknown source'} ({self.fingerprint})"


@dataclass(frozen=True, slots=True)
class _Key:
    """A parsed keyring key: host labels, port and path prefix."""

    text: str
    labels: tuple[str, ...]
    port: str
    path: str

    @property
    def wildcards(self) -> int:
        return sum(1 for label in self.labels if not label.startswith("[") and any(c in label for c in "*?["))


def _split_host(host: str) -> tuple[str, str]:
    """``host[:port]`` or ``[v6]:port`` → (host, port)."""
    if host.startswith("["):
        end = host.find("]")
        if end == -1:
            return host, ""
        rest = host[end + 1:]
        return host[: end + 1], rest[1:] if rest.startswith(":") else ""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and name:
        return name, port
    return host, ""


def parse_key(text: str) -> _Key | None:
    """Parse a config key or match pattern (``[scheme://]host[:port][/path]``); None if unusable."""
    value = text.strip()
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme.lower() not in ("http", "https"):
            return None
        value = rest
    host, slash, path = value.partition("/")
    path = slash + path
    if path.startswith(("/v1/", "/v2/")):  # Docker's API-version suffixes name the whole host
        path = path[3:]
    path = "" if path == "/" else path
    if not host or any(c.isspace() for c in host) or "@" in host:
        return None
    name, port = _split_host(host.lower())
    if name in DOCKER_HUB_ALIASES:
        name = _DOCKER_HUB
    labels = tuple(name.split("."))
    if not all(labels):
        return None
    return _Key(text=text, labels=labels, port=port, path=path)


def matches(pattern: str | _Key, image: str) -> bool:
    """Does *pattern* (a keyring key or a ``matchImages`` entry) apply to *image* (``host/repository``)?"""
    key = parse_key(pattern) if isinstance(pattern, str) else pattern
    target = parse_key(image)
    if key is None or target is None:
        return False
    if key.port != target.port or len(key.labels) != len(target.labels):
        return False
    if not target.path.startswith(key.path):
        return False
    # an IPv6 literal (``[::1]``) is one label compared as text, not a glob character class
    return all(
        glob == part or (not glob.startswith("[") and fnmatch.fnmatchcase(part, glob))
        for glob, part in zip(key.labels, target.labels, strict=True)
    )


def specificity(key: _Key) -> tuple[int, int, int]:
    """Sort key, most specific first: longer path, fewer wildcard labels, more labels."""
    return (-len(key.path), key.wildcards, -len(key.labels))


def header_safe(value: str) -> bool:
    """True when *value* can go into an ``Authorization`` header as it is (no whitespace or controls)."""
    return not any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)


def _decode_auth(value: Any) -> tuple[str, str] | str:
    """``auth`` is base64 of ``user:password``; a reason string when it is not."""
    if not isinstance(value, str):
        return "'auth' is not a string"
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return "'auth' is not base64 of UTF-8 text"
    user, sep, password = decoded.partition(":")
    if not sep:
        return "'auth' does not decode to user:password"
    return user, password


def _entry_credential(entry: Any, *, source: str) -> Credential | str:
    """One docker config entry → a Credential, or the reason it is unusable (never naming a secret)."""
    if not isinstance(entry, Mapping):
        return "the entry is not an object"
    fields: dict[str, str] = {}
    for name in ("username", "password", "identitytoken", "registrytoken"):
        value = entry.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name!r} is not a string"
        fields[name] = value or ""
    if not header_safe(fields["registrytoken"]):
        # it goes into a header as it is: a control character would make the request fail
        # with an error that quotes the header, secret and all
        return "'registrytoken' holds whitespace or control characters"
    username, password = fields["username"], fields["password"]
    if entry.get("auth"):
        decoded = _decode_auth(entry["auth"])
        if isinstance(decoded, str):
            return decoded
        username, password = decoded
    credential = Credential(
        username=username,
        password=password,
        identity_token=fields["identitytoken"],
        registry_token=fields["registrytoken"],
        source=source,
    )
    if credential.anonymous:
        return "it has no username, password or token"
    return credential


class Keyring:
    """Credentials by registry key; :meth:`lookup` answers which apply to an image, best first."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[str, Credential]] = ()) -> None:
        parsed: list[tuple[_Key, Credential]] = []
        for text, credential in entries:
            key = parse_key(text)
            if key is None:
                log.warning("ignoring registry key %r from %s: not HOST[:PORT][/PATH]",
                            text, credential.source or "unknown source")
                continue
            parsed.append((key, credential))
        self._entries: tuple[tuple[_Key, Credential], ...] = tuple(parsed)

    @classmethod
    def from_docker_config(cls, data: Mapping[str, Any], *, source: str) -> Keyring:
        """Read ``config.json`` (``{"auths": {...}}``) or a legacy ``.dockercfg`` (registries at the top).

        A malformed entry is skipped with a logged reason; a malformed document is an empty keyring.
        """
        if not isinstance(data, Mapping):
            log.warning("ignoring docker config from %s: not a JSON object", source)
            return cls()
        auths = data.get("auths", data)
        if not isinstance(auths, Mapping):
            log.warning("ignoring docker config from %s: 'auths' is not an object", source)
            return cls()
        entries: list[tuple[str, Credential]] = []
        for key, entry in auths.items():
            credential = _entry_credential(entry, source=source)
            if isinstance(credential, str):
                log.warning("ignoring the entry for %r in %s: %s", key, source, credential)
                continue
            entries.append((str(key), credential))
        return cls(entries)

    @classmethod
    def merge(cls, *keyrings: Keyring) -> Keyring:
        """One keyring holding every entry; among equally specific keys, earlier keyrings come first."""
        merged = cls()
        merged._entries = tuple(entry for keyring in keyrings for entry in keyring._entries)
        return merged

    def lookup(self, image: str) -> list[Credential]:
        """Every credential whose key matches *image* (``host/repository``), the most specific first."""
        found = [(key, credential) for key, credential in self._entries if matches(key, image)]
        found.sort(key=lambda pair: specificity(pair[0]))  # stable: config order breaks ties
        return [credential for _, credential in found]

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        keys = ", ".join(key.text for key, _ in self._entries)
        return f"Keyring({keys})"
