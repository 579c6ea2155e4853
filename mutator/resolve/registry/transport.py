"""How a request reaches a registry: endpoints (mirrors, then upstream), TLS, retries, metrics.

Kept apart from the client, which knows what to ask for (manifests, blobs,
digests), and from ``auth``, which knows who is asking. The transport knows
only *where* to send a request and *how long* it may keep trying:

- a registry's ``mirrors`` are tried in order before the registry itself, as
  containerd's ``hosts.toml`` does; each mirror is reached with its own
  ``registries`` entry (plain HTTP, CA, client certificate) and gets
  ``?ns=<upstream>`` so one mirror can serve several registries;
- ``429`` and ``503`` are retried after ``Retry-After`` (seconds or an HTTP
  date) or a short capped backoff, but only when the wait fits in the time the
  lookup has left (:data:`DEADLINE`): a sleep that would outlive the admission
  is a temporary failure now, not a late answer;
- every request is counted and timed in ``REGISTRY_REQUESTS`` and
  ``REGISTRY_REQUEST_SECONDS``; :func:`measured` lets token and ping requests,
  made elsewhere, count into the same series.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp

from mutator import metrics
from mutator.errors import RegistryError, RegistryUnavailable
from mutator.resolve.registry.reference import DOCKER_HUB
from mutator.resolve.registry.settings import RegistrySettings

log = logging.getLogger(__name__)

# The loop time (``loop.time()``) by which the current lookup must have its answer.
# Set by the resolver for each lookup; unset means "no deadline" (tools, tests).
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("registry_deadline",
                                                                        default=None)

# The request the current lookup is waiting on, so a timeout can say where it got stuck.
IN_FLIGHT: contextvars.ContextVar[str] = contextvars.ContextVar("registry_in_flight", default="")

RETRY_STATUSES = frozenset({429, 503})
MAX_ATTEMPTS = 4  # one request and up to three retries
BACKOFF_FIRST_SECONDS = 0.1  # without Retry-After: 0.1, 0.2, 0.4 s (±20 %), capped below
BACKOFF_CAP_SECONDS = 1.0
# A retry is only worth it when the request after the wait has some time left too.
MIN_REQUEST_SECONDS = 0.1
MAX_RETRY_WAIT_SECONDS = 30.0  # even with no deadline set (a tool calling the client directly)
MAX_REDIRECTS = 5  # blob redirects to storage are one hop; more is a misconfiguration or a loop


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to send a registry's requests to."""

    host: str  # whose ``registries`` entry and credentials apply (the mirror's own, for a mirror)
    base_url: str  # scheme://host[:port]
    upstream: str | None = None  # for a mirror: the registry it stands in for (sent as ``ns``)

    @property
    def is_mirror(self) -> bool:
        return self.upstream is not None


def time_left() -> float:
    """Seconds until :data:`DEADLINE`, or infinity when no deadline is set."""
    deadline = DEADLINE.get()
    if deadline is None:
        return float("inf")
    return deadline - asyncio.get_running_loop().time()


def retry_delay(header: str | None, attempt: int, *, now: float | None = None) -> float:
    """Seconds to wait before retry number *attempt* + 1 (``Retry-After`` wins when it parses).

    ``Retry-After`` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3);
    anything else falls back to an exponential backoff, as if it were absent.
    """
    if header:
        header = header.strip()
        if header.isdigit():
            return float(header)
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    base = min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt)
    return base * random.uniform(0.8, 1.2)


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{min(max(status // 100, 1), 5)}xx"


class Measure:
    """What :func:`measured` records: set :attr:`status` once the response is in."""

    status: int | None = None


@contextmanager
def measured(kind: str) -> Iterator[Measure]:
    """Count and time one registry request of *kind* (ping, token, manifest, config, layer).

    Usage: ``with measured("token") as m: response = await ...; m.status = response.status``.
    A block left without a status (no answer, an exception) counts as ``error``.
    """
    measure = Measure()
    started = time.perf_counter()
    try:
        yield measure
    finally:
        metrics.REGISTRY_REQUEST_SECONDS.labels(kind).observe(time.perf_counter() - started)
        metrics.REGISTRY_REQUESTS.labels(kind, status_class(measure.status)).inc()


class Transport:
    """Sends one registry request, with the TLS, endpoints and retries its configuration asks for."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        registries: Callable[[str], RegistrySettings],
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._session = session
        self._registries = registries
        self._max_attempts = max_attempts
        self._tls_contexts: dict[str, ssl.SSLContext | bool] = {}

    def endpoints(self, registry: str) -> tuple[Endpoint, ...]:
        """The registry's mirrors in order, then the registry itself."""
        settings = self._registries(registry)
        mirrors = tuple(
            Endpoint(mirror, _base_url(mirror, self._registries(mirror)), upstream=registry)
            for mirror in settings.mirrors if mirror != registry
        )
        return (*mirrors, Endpoint(registry, _base_url(registry, settings)))

    def tls(self, host: str) -> ssl.SSLContext | bool:
        """The TLS settings for *host*: ``False`` for plain HTTP, ``True`` for the system CAs."""
        context = self._tls_contexts.get(host)
        if context is None:
            context = self._tls_contexts[host] = _tls_context(host, self._registries(host))
        return context

    async def send(
        self, method: str, endpoint: Endpoint, path: str, *, headers: Mapping[str, str], kind: str
    ) -> aiohttp.ClientResponse:
        """One request, retried on 429/503 while the deadline allows; the caller closes the response.

        Only the registry itself is retried: for a mirror, any status goes back to
        the caller, which moves on to the next endpoint.

        Returns any other status for the caller to judge. Raises
        :class:`RegistryUnavailable` when the registry cannot be reached and a
        temporary :class:`RegistryError` when it keeps asking us to come back
        later than the deadline allows.
        """
        url = endpoint.base_url + path
        params = {"ns": endpoint.upstream} if endpoint.upstream else None
        for attempt in range(self._max_attempts):
            response = await self._once(method, url, endpoint, params=params, headers=headers, kind=kind)
            if response.status not in RETRY_STATUSES or endpoint.is_mirror:
                return response  # a busy mirror is passed over at once: the next host may not be
            retry_after = response.headers.get("Retry-After")
            response.close()
            said = f"{endpoint.host} answered HTTP {response.status} for the {kind}"
            if attempt + 1 == self._max_attempts:
                raise RegistryError(f"{said} {self._max_attempts} times",
                                    status=response.status, temporary=True)
            wait, left = retry_delay(retry_after, attempt), min(time_left(), MAX_RETRY_WAIT_SECONDS)
            if wait + MIN_REQUEST_SECONDS > left:
                shown = f"{wait:.1f}".removesuffix(".0")
                why = f"retry after {shown} s is" if retry_after else "a retry would be"
                raise RegistryError(f"{said}; {why} past the deadline ({max(left, 0):.1f} s left)",
                                    status=response.status, temporary=True)
            log.info("%s; retrying in %.2f s", said, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(self, method: str, url: str, endpoint: Endpoint, *,
                    params: Mapping[str, str] | None, headers: Mapping[str, str], kind: str
                    ) -> aiohttp.ClientResponse:
        host = endpoint.host
        tls = self.tls(host)
        IN_FLIGHT.set(f"the {kind} from {host}")
        with measured(kind) as measure:
            try:
                response = await self._session.request(
                    method, url, params=params, headers=dict(headers), ssl=tls, max_redirects=MAX_REDIRECTS,
                )
            except aiohttp.ClientConnectorCertificateError as exc:
                # A configuration problem, not a passing one: retrying will not help.
                raise RegistryError(
                    f"TLS with {host} failed: {exc.certificate_error}; set registries.{host}.ca_file "
                    "for a private CA, or plain_http if it serves plain HTTP"
                ) from None
            except aiohttp.ClientSSLError as exc:
                _plain_http_peer(host, exc)
                raise RegistryUnavailable(f"TLS handshake with {host} failed: {_reason(exc)}") from None
            except aiohttp.ClientConnectorError as exc:
                error = exc.os_error
                if isinstance(error, ConnectionRefusedError):
                    raise RegistryUnavailable(f"cannot reach {host}: connection refused") from None
                if tls is not False and isinstance(error, (ConnectionResetError, ssl.SSLError)):
                    _plain_http_peer(host, error)
                    raise RegistryUnavailable(
                        f"TLS handshake with {host} failed: {str(error) or 'the connection was closed'}"
                    ) from None
                reason = error.strerror or _reason(error)
                raise RegistryUnavailable(f"cannot reach {host}: {reason}") from None
            except aiohttp.TooManyRedirects:
                raise RegistryUnavailable(
                    f"{host} redirected the {kind} request more than {MAX_REDIRECTS} times"
                ) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise RegistryUnavailable(f"cannot reach {host}: {_reason(exc)}") from None
            measure.status = response.status
        return response


def _plain_http_peer(host: str, exc: BaseException) -> None:
    """Raise a permanent error that says so when the TLS peer answered in plain HTTP: OpenSSL reads
    ``HTTP/1.1 400`` as a record of an unknown version. A configuration problem; retrying will not help."""
    error = getattr(exc, "os_error", exc)
    if isinstance(error, ssl.SSLError) and getattr(error, "reason", None) == "WRONG_VERSION_NUMBER":
        raise RegistryError(f"TLS handshake with {host} failed: the registry answered in plain HTTP; "
                            f"set registries.{host}.plain_http: true in the config file") from None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _base_url(host: str, settings: RegistrySettings) -> str:
    # Docker Hub's API lives on another name than its images do.
    api_host = "registry-1.docker.io" if host == DOCKER_HUB else host
    return f"{'http' if settings.plain_http else 'https'}://{api_host}"


def _tls_context(host: str, settings: RegistrySettings) -> ssl.SSLContext | bool:
    if settings.plain_http:
        return False
    if settings.ca_file is None and settings.cert_file is None and not settings.insecure_skip_verify:
        return True
    # The private CA is added to the system's, as containerd's hosts.toml ``ca`` is: a registry
    # behind a private CA may still redirect blob downloads to storage with a public certificate.
    context = ssl.create_default_context()
    if settings.ca_file:
        context.load_verify_locations(cafile=settings.ca_file)
    if settings.cert_file and settings.key_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.insecure_skip_verify:
        log.warning(
            "INSECURE: TLS certificates of registry %s are NOT verified (insecure_skip_verify); "
            "anyone on the path can serve it any image and choose the uid we patch", host,
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
