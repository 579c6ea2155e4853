"""Answering registry challenges: the distribution token flow, Basic, and bare registry tokens.

The client asks the :class:`Authenticator` for headers before each request, for
one candidate :class:`~mutator.resolve.registry.authn.keyring.Credential` of the lookup it
serves, and hands it any 401. What is learned is kept so later requests skip
round trips:

* the challenge each registry origin answers with (``Bearer realm=…`` or
  ``Basic``), so a new repository gets its token *before* its first request;
  a 401 without a ``WWW-Authenticate`` header is answered by pinging ``/v2/``
  once to learn it;
* bearer tokens, per (origin, scope, credential fingerprint), until shortly
  before they expire (``issued_at`` + ``expires_in``; 60 s when unsaid), with
  concurrent fetches of one token coalesced into one.

Tokens come from the realm with a GET, anonymously or with Basic credentials; an
``identitytoken`` is exchanged with the OAuth2 refresh-token POST (falling back to
the GET when the realm does not speak OAuth2), and a ``registrytoken`` is sent
as-is. No secret is ever put into a log line, an error or a metric label.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiohttp
from cachetools import LRUCache, TLRUCache

from mutator.errors import RegistryError, RegistryUnavailable
from mutator.resolve.registry.authn.keyring import Credential, header_safe
from mutator.resolve.registry.transport import measured

log = logging.getLogger(__name__)

ANONYMOUS = Credential(source="anonymous")
DEFAULT_TOKEN_SECONDS = 60.0  # the token spec's assumption when expires_in is absent
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024
CLIENT_ID = "nonroot-mutator"
_PARAM_RE = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split ``WWW-Authenticate: Bearer realm="…",service="…"`` into scheme and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


def origin_of(url: str) -> str:
    """``scheme://host:port`` of *url*: what a challenge and a token belong to."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


class Authenticator(Protocol):
    async def headers(self, *, registry: str, url: str, repository: str,
                      credential: Credential) -> dict[str, str]:
        """Headers for a request to *url* (of *registry*, for *repository*) made with *credential*."""
        ...

    async def challenged(self, *, registry: str, url: str, repository: str,
                         credential: Credential, challenge: str, sent: str) -> bool:
        """Handle a 401 to a request made with *credential* (*sent*: its Authorization header, if any).

        True when a retry is worth it.
        """
        ...


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    realm: str = ""
    service: str = ""


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: float  # time.monotonic() at which it is no longer used

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at:.0f})"


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def token_lifetime(answer: dict[str, object], *, now_wall: float) -> float:
    """Seconds the token in *answer* stays valid from now: ``issued_at`` + ``expires_in``."""
    expires_in = answer.get("expires_in")
    seconds = (float(expires_in) if isinstance(expires_in, int | float) and not isinstance(expires_in, bool)
               and expires_in > 0 else DEFAULT_TOKEN_SECONDS)
    issued_at = answer.get("issued_at")
    if isinstance(issued_at, str):
        try:
            issued = datetime.fromisoformat(issued_at.replace("Z", "+00:00")).timestamp()
        except ValueError:
            issued = now_wall
        # a server clock ahead of ours must not stretch the token's life
        return max(0.0, min(issued, now_wall) + seconds - now_wall)
    return seconds


def refresh_margin(lifetime: float) -> float:
    """How long before expiry a token is dropped: a tenth of its life, between 1 and 30 s."""
    return max(1.0, min(30.0, lifetime / 10))


class TokenAuthenticator:
    """Answers Bearer and Basic challenges for every registry, caching what it learns."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        tls: Callable[[str], ssl.SSLContext | bool],
        clock: Callable[[], float] = time.monotonic,
        max_tokens: int = 4096,
    ) -> None:
        self._session = session
        self._tls = tls  # the transport's TLS settings per registry host (False: plain HTTP)
        self._clock = clock
        self._challenges: LRUCache[str, Challenge] = LRUCache(maxsize=1024)
        self._tokens: TLRUCache[tuple[str, str, str], Token] = TLRUCache(
            maxsize=max_tokens, ttu=lambda _key, token, _now: token.expires_at, timer=clock
        )
        self._fetching: dict[tuple[str, str, str], asyncio.Future[Token | None]] = {}

    # -- the Authenticator seam ------------------------------------------------------------
    async def headers(self, *, registry: str, url: str, repository: str,
                      credential: Credential) -> dict[str, str]:
        if credential.registry_token:
            return {"Authorization": f"Bearer {credential.registry_token}"}
        challenge = self._challenges.get(origin_of(url))
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            return {"Authorization": _basic(credential.username, credential.password)} \
                if not credential.anonymous else {}
        token = await self._token(registry, url, challenge, pull_scope(repository), credential)
        return {"Authorization": f"Bearer {token.value}"} if token else {}

    async def challenged(self, *, registry: str, url: str, repository: str,
                         credential: Credential, challenge: str, sent: str) -> bool:
        origin = origin_of(url)
        if credential.registry_token:
            return False  # a registry token is all there is: a 401 is the registry's answer
        learned = self._learn(origin, challenge) if challenge else await self._ping(registry, origin)
        if learned is None:
            return False
        if learned.scheme == "basic":  # worth a retry unless these credentials were just sent, and refused
            return not credential.anonymous and sent != _basic(credential.username, credential.password)
        scope = parse_challenge(challenge)[1].get("scope") if challenge else None
        key = (origin, scope or pull_scope(repository), credential.fingerprint)
        cached = self._tokens.get(key)
        if cached is not None:
            if sent != f"Bearer {cached.value}":
                return True  # fetched by a concurrent request meanwhile: retry with it
            self._tokens.pop(key, None)  # the token we sent was refused (revoked, expired early)
        return await self._token(registry, url, learned, key[1], credential) is not None

    # -- challenges --------------------------------------------------------------------------
    def _learn(self, origin: str, header: str) -> Challenge | None:
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            learned = Challenge("basic")
        elif scheme == "bearer" and params.get("realm"):
            learned = Challenge("bearer", params["realm"], params.get("service", ""))
        else:
            log.debug("%s sent a challenge we cannot answer: scheme %r", origin, scheme)
            return None
        if self._challenges.get(origin) != learned:
            log.debug("%s asks for %s authentication%s", origin, learned.scheme,
                      f" at {learned.realm} (service {learned.service!r})" if learned.realm else "")
            self._challenges[origin] = learned
        return learned

    async def _ping(self, registry: str, origin: str) -> Challenge | None:
        """A 401 without a challenge: ask ``/v2/`` how to authenticate (once per origin)."""
        known = self._challenges.get(origin)
        if known is not None:
            return known
        with measured("ping") as measure:
            try:
                async with self._session.get(f"{origin}/v2/", ssl=self._tls(registry)) as response:
                    header = response.headers.get("WWW-Authenticate", "")
                    status = measure.status = response.status
            except (aiohttp.ClientError, OSError) as exc:
                raise RegistryUnavailable(f"cannot reach {registry} to learn its challenge: {exc}") from None
        if status != 401 or not header:
            return None  # no challenge to learn: the 401 stands
        return self._learn(origin, header)

    # -- tokens --------------------------------------------------------------------------------
    async def _token(self, registry: str, url: str, challenge: Challenge, scope: str,
                     credential: Credential) -> Token | None:
        """A cached or fresh token; None when the realm refused *credential*."""
        key = (origin_of(url), scope, credential.fingerprint)
        token = self._tokens.get(key)
        if token is not None:
            return token
        pending = self._fetching.get(key)
        if pending is None:
            pending = self._fetching[key] = asyncio.ensure_future(
                self._fetch(registry, challenge, scope, credential)
            )
            pending.add_done_callback(lambda done, key=key: self._fetched(key, done))
        token = await asyncio.shield(pending)
        if token is not None:
            self._tokens[key] = token
        return token

    def _fetched(self, key: tuple[str, str, str], done: asyncio.Future[Token | None]) -> None:
        self._fetching.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved here, so a fetch whose callers all left is not reported as lost

    async def _fetch(self, registry: str, challenge: Challenge, scope: str,
                     credential: Credential) -> Token | None:
        realm = urllib.parse.urlsplit(challenge.realm)
        if realm.scheme not in ("https", "http") or not realm.netloc:
            raise RegistryError(f"{registry} names an unusable token realm {challenge.realm!r}")
        if realm.scheme == "http" and not credential.anonymous and self._tls(registry) is not False:
            raise RegistryError(
                f"{registry} asks for credentials to be sent to a plain-HTTP realm {challenge.realm}; refused"
            )
        params = {"scope": scope, **({"service": challenge.service} if challenge.service else {})}
        if credential.identity_token:
            form = {**params, "grant_type": "refresh_token", "refresh_token": credential.identity_token,
                    "client_id": CLIENT_ID}
            status, answer = await self._call(registry, "POST", challenge.realm, data=form)
            if status not in (404, 405):  # a realm without OAuth2 takes the GET below
                return self._accept(registry, status, answer, scope, credential)
            password = credential.identity_token
        else:
            password = credential.password
        headers = {} if credential.anonymous else {"Authorization": _basic(credential.username, password)}
        status, answer = await self._call(registry, "GET", challenge.realm, params=params, headers=headers)
        return self._accept(registry, status, answer, scope, credential)

    async def _call(self, registry: str, method: str, realm: str, **kwargs: object
                    ) -> tuple[int, dict[str, object] | None]:
        with measured("token") as measure:
            try:
                async with self._session.request(method, realm, ssl=self._realm_tls(registry),
                                                 **kwargs) as response:  # type: ignore[arg-type]
                    status = measure.status = response.status
                    raw = await response.content.read(MAX_TOKEN_RESPONSE_BYTES + 1) if status == 200 else b""
            except (aiohttp.ClientError, OSError) as exc:
                raise RegistryUnavailable(f"cannot reach the token realm of {registry}: {exc}") from None
        if status != 200:
            return status, None
        if len(raw) > MAX_TOKEN_RESPONSE_BYTES:
            raise RegistryError(f"the token realm of {registry} sent an oversized answer")
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        return status, answer if isinstance(answer, dict) else {}

    def _accept(self, registry: str, status: int, answer: dict[str, object] | None, scope: str,
                credential: Credential) -> Token | None:
        if status in (401, 403):
            log.debug("the token realm of %s refused %s for %s (HTTP %d)",
                      registry, credential, scope, status)
            return None
        if status != 200 or answer is None:
            raise RegistryError(f"the token realm of {registry} answered HTTP {status}",
                                status=status, temporary=status == 429 or status >= 500)
        value = answer.get("token") or answer.get("access_token")
        if not isinstance(value, str) or not value or not header_safe(value):
            raise RegistryError(f"the token realm of {registry} answered without a usable token")
        lifetime = token_lifetime(answer, now_wall=time.time())
        expires_at = self._clock() + lifetime - refresh_margin(lifetime)
        log.debug("token for %s at %s with %s, valid %.0f s", scope, registry, credential, lifetime)
        return Token(value, expires_at)

    def _realm_tls(self, registry: str) -> ssl.SSLContext | bool:
        """TLS for the realm: the registry's (its CA is added to the system's), always verified.

        A plain-HTTP registry's ``False`` must not become "skip verification" for an HTTPS realm.
        """
        tls = self._tls(registry)
        return True if tls is False else tls
