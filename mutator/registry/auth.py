"""Registry credentials: the seam where challenges are answered.

The client asks an :class:`Authenticator` for headers before each request and
hands it any 401 challenge. Only anonymous access exists so far; pull secrets
and bearer tokens plug in here without touching the transport.
"""

from __future__ import annotations

import re
from typing import Protocol

from mutator.errors import RegistryError

_PARAM_RE = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split ``WWW-Authenticate: Bearer realm="…",service="…"`` into scheme and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


class Authenticator(Protocol):
    async def headers(self, *, registry: str, repository: str) -> dict[str, str]:
        """Headers to send with a request to *registry* for *repository*."""
        ...

    async def challenged(self, *, registry: str, repository: str, challenge: str) -> bool:
        """Handle a 401 challenge; True when the request should be retried."""
        ...


class Anonymous:
    """No credentials: a registry that demands them gets a clear, permanent error."""

    async def headers(self, *, registry: str, repository: str) -> dict[str, str]:
        return {}

    async def challenged(self, *, registry: str, repository: str, challenge: str) -> bool:
        scheme, params = parse_challenge(challenge)
        raise RegistryError(
            f"{registry} requires {scheme or 'some'} authentication for {repository}"
            f"{' (realm ' + params['realm'] + ')' if 'realm' in params else ''}; "
            "no credentials are configured",
            status=401,
        )
