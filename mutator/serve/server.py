"""The HTTPS server: ``POST /mutate/{enforce,warn,audit}``, health, readiness and metrics.

The mode is in the URL path so that the chart's webhook configuration can route
namespaces by label (one webhook entry per mode) without the server reading
Namespace objects.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mutator import __version__, durations, logs, metrics
from mutator.config import Config
from mutator.decide import admission, workloads
from mutator.decide.admission import Review
from mutator.decide.policy import Mode
from mutator.errors import BadReview
from mutator.resolve.kube import pullsecrets
from mutator.resolve.registry.authn.credentials import CredentialSources
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver
from mutator.serve import loopstats, pipeline, warmup, workload_warnings
from mutator.serve.certreload import CertReloader
from mutator.serve.dockerreload import DockerConfigReloader
from mutator.serve.drain import Drain, Handler
from mutator.serve.memo import Memo

log = logging.getLogger(__name__)

MAX_ADMISSION_TIMEOUT = 30.0  # the API server never waits longer than this

# The API server sends application/json; an absent type is read as octet-stream by aiohttp.
_JSON_TYPES = frozenset({"application/json", "application/octet-stream"})

RESOLVER = web.AppKey("resolver", Resolver)
CONFIG = web.AppKey("config", Config)
LOOP = web.AppKey("loop", asyncio.AbstractEventLoop)
PULL_SECRETS = web.AppKey("pull_secrets", pullsecrets.PullSecrets)
MEMO = web.AppKey("memo", Memo)
DRAIN = web.AppKey("drain", Drain)


@functools.lru_cache(maxsize=64)  # the API server sends the same few values every time
def parse_timeout(text: str | None) -> float | None:
    """Parse the API server's ``?timeout=`` (a Go duration such as ``10s`` or ``1m30s``)."""
    try:
        total = durations.parse(text)
    except ValueError:
        return None
    return total if total > 0 else None


def _bad_request(request: web.Request, reason: str, mode: str) -> web.Response:
    """A 400 that says why, counted and logged: a misrouted webhook rule is otherwise invisible."""
    metrics.ADMISSIONS.labels(mode, "bad_request").inc()
    logs.bad_request(reason=reason, path=request.path, remote=request.remote)
    return web.json_response({"error": reason}, status=400)


_MODES = {mode.value: mode for mode in Mode}


@functools.lru_cache(maxsize=64)  # the API server sends the same query string every time
def _query_timeout(query: str) -> float | None:
    """``?timeout=`` of a raw query string, without building a query mapping per request."""
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "timeout":
            return parse_timeout(urllib.parse.unquote(value))
    return None


@functools.cache
def _counted(mode: Mode, result: str) -> tuple[tuple[Any], Any]:
    """The admission counter (as :func:`mutator.metrics.tally` takes it) and histogram of (*mode*,
    *result*), bound once: labels() takes a lock and builds a key, which the warm path pays for on
    every request otherwise."""
    labels = (mode.value, result)
    return (metrics.ADMISSIONS.labels(*labels),), metrics.ADMISSION_SECONDS.labels(*labels)


async def mutate(request: web.Request) -> web.Response:
    started = time.perf_counter()
    mode, timeout = _mode_and_timeout(request, request.match_info["mode"], budget=MAX_ADMISSION_TIMEOUT)
    body = await _read_body(request, mode)
    if isinstance(body, web.Response):
        return body
    try:
        outcome = await pipeline.admit(body, mode=mode, resolver=request.app[RESOLVER], api_timeout=timeout,
                                      memo=request.app[MEMO])
    except BadReview as exc:
        return _bad_request(request, str(exc), mode)
    answer = outcome.body
    if outcome.failed:  # counted and logged where it failed; the mode's failure policy answers
        return web.Response(body=answer, content_type="application/json")

    elapsed = time.perf_counter() - started
    counts, seconds = _counted(mode, outcome.result)
    metrics.tally(counts)
    seconds.observe(elapsed)
    if outcome.line is not None:  # a patch, a refusal or a warning: one line (see mutator.logs)
        outcome.line.write(outcome.review, elapsed)
    return web.Response(body=answer, content_type="application/json")


def _mode_and_timeout(request: web.Request, name: str, *, budget: float) -> tuple[Mode, float]:
    """The mode the path names (404 for another) and how long the API server waits: its
    ``?timeout=`` (else the configured default), at most *budget* seconds. The deadline is made
    from it only where an answer is not ready (see :func:`mutator.serve.pipeline.deadline_for`)."""
    mode = _MODES.get(name)
    if mode is None:
        raise web.HTTPNotFound(text="modes are enforce, warn and audit")
    timeout = _query_timeout(request.rel_url.raw_query_string)
    if timeout is None:
        timeout = request.app[CONFIG].default_admission_timeout_seconds
    return mode, min(timeout, budget)


async def _read_review(request: web.Request, label: str, *,
                       resources: frozenset[tuple[str, str]]) -> Review | web.Response:
    """The validated review in the request, or the 400 that answers it (counted under *label*)."""
    body = await _read_body(request, label)
    return body if isinstance(body, web.Response) else _decode(request, body, label, resources=resources)


async def _read_body(request: web.Request, label: str) -> bytes | web.Response:
    """The request's body, or the 400 that answers it: not JSON, too large, or unreadable."""
    if request.content_type not in _JSON_TYPES:
        return _bad_request(
            request, f"Content-Type {request.content_type!r} is not JSON: send application/json", label)
    if (request.content_length or 0) > admission.MAX_BODY_BYTES:
        return _bad_request(request, f"request body is larger than {admission.MAX_BODY_BYTES} bytes", label)
    try:
        body = await request.read()  # a gzip/deflate body is inflated; the bound counts inflated bytes
    except web.HTTPRequestEntityTooLarge:
        return _bad_request(request, f"request body is larger than {admission.MAX_BODY_BYTES} bytes", label)
    except (RequestPayloadError, ConnectionResetError) as exc:  # corrupt gzip/deflate, or cut short
        cause = exc.__cause__ or exc
        reason = " ".join(str(getattr(cause, "message", None) or cause).split())
        # The stream is unusable: mark it ended so that aiohttp does not drain it again, and close.
        request.content.feed_eof()
        response = _bad_request(request, f"request body could not be read: {reason}", label)
        response.force_close()
        return response
    if len(body) > admission.MAX_BODY_BYTES:  # chunked, with no Content-Length to refuse it by
        return _bad_request(request, f"request body is larger than {admission.MAX_BODY_BYTES} bytes", label)
    return body


def _decode(request: web.Request, body: bytes, label: str, *,
            resources: frozenset[tuple[str, str]]) -> Review | web.Response:
    try:
        return admission.decode(body, resources=resources)
    except BadReview as exc:
        return _bad_request(request, str(exc), label)
    except Exception:  # a bug: logged in full, never a 500 with a traceback
        log.exception("internal error reading a review on %s", request.path)
        return _bad_request(request, "request could not be read (internal error, logged)", label)


async def warn_workloads(request: web.Request) -> web.Response:
    """Warnings only, for workloads: see :mod:`mutator.serve.workload_warnings`."""
    mode, timeout = _mode_and_timeout(request, request.match_info.get("mode", Mode.ENFORCE.value),
                                      budget=workload_warnings.BUDGET_SECONDS)
    deadline = pipeline.deadline_for(timeout, loop=request.app[LOOP])
    label = f"workloads-{mode}"
    review = await _read_review(request, label, resources=workloads.RESOURCES)
    if isinstance(review, web.Response):
        return review
    try:
        response = await workload_warnings.handle(
            review, mode=mode, resolver=request.app[RESOLVER], deadline=deadline)
    except BadReview as exc:
        return _bad_request(request, str(exc), label)
    except Exception:  # a bug: logged; warnings fail open, as their webhook does
        log.exception("internal error warning on review uid=%s", review.uid)
        metrics.ADMISSIONS.labels(label, "error").inc()
        return web.json_response(admission.respond(review.uid, allowed=True))
    metrics.ADMISSIONS.labels(label, "allowed").inc()
    return web.Response(body=orjson.dumps(response), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    drain = request.app.get(DRAIN)
    if drain is not None and drain.draining:
        return web.Response(status=503, text="shutting down\n")
    if RESOLVER not in request.app:
        return web.Response(status=503, text="starting\n")
    pods = request.app.get(PULL_SECRETS)
    if pods is not None and not pods.ready:  # the first lists, bounded: see PullSecrets.ready
        return web.Response(status=503, text="reading pull secrets\n")
    return web.Response(text="ok\n")


async def metrics_endpoint(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def _untracked(handler: Handler) -> Handler:
    return handler


def make_app(config: Config, *, drain: Drain | None = None) -> web.Application:
    # One byte over the limit so that an oversized body is seen and answered with a 400.
    app = web.Application(client_max_size=admission.MAX_BODY_BYTES + 1)
    app[CONFIG] = config
    if drain is not None:
        app[DRAIN] = drain
    track = drain.track if drain is not None else _untracked
    app[MEMO] = Memo()
    app.router.add_post("/mutate/{mode}", track(mutate))
    app.router.add_post("/warn/workloads", track(warn_workloads))
    app.router.add_post("/warn/workloads/{mode}", track(warn_workloads))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.cleanup_ctx.append(_registry_session)
    app.cleanup_ctx.append(loopstats.watch)
    return app


async def _registry_session(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    pods = await pullsecrets.from_config(enabled=config.pull_secrets, kubeconfig=config.kubeconfig)
    if pods is not None:
        app[PULL_SECRETS] = pods
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30),
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=20),
        ) as session:
            app[LOOP] = asyncio.get_running_loop()
            client = RegistryClient(session=session, registries=config.registry)
            credentials = CredentialSources.from_files(
                provider_config=config.credential_provider_config,
                provider_bin_dir=config.credential_provider_bin_dir,
                docker_config=config.docker_config, pods=pods)
            resolver = app[RESOLVER] = Resolver(client=client, config=config, credentials=credentials)
            # readiness does not wait for the warm-up: a cold cache is slower, not wrong
            tasks = [asyncio.create_task(warmup.warm_up(
                resolver, concurrency=config.warmup_concurrency, kubeconfig=config.kubeconfig))
                     ] if config.warmup else []
            if config.docker_config:  # a rotated Secret is used in place: see mutator.serve.dockerreload
                reloader = DockerConfigReloader(credentials, config.docker_config)
                tasks.append(asyncio.create_task(reloader.run(interval=config.docker_config_reload_seconds)))
            yield
            for task in tasks:
                task.cancel()
    finally:
        if pods is not None:
            await pods.close()


def make_metrics_app() -> web.Application:
    """/metrics (and /healthz) over plain HTTP, so scraping needs no webhook TLS."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/healthz", healthz)
    return app


def _url(site: web.TCPSite, scheme: str, host: str, port: int) -> str:
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[:2] if sockets else (host, port)
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return f"{scheme}://{shown}:{bound[1]}"


async def serve(config: Config, *, host: str, port: int, ssl_context: ssl.SSLContext,
                on_ready: str = "", metrics_listen: tuple[str, int] | None = None,
                reloader: CertReloader | None = None, reload_interval: float = 5.0) -> signal.Signals:
    """Serve until SIGTERM or SIGINT; then drain (see :mod:`mutator.serve.drain`), stop, and return it.

    With *reloader*, the certificate files are checked every *reload_interval*
    seconds and a rotated pair is loaded into *ssl_context* in place.
    """
    metrics.BUILD_INFO.labels(__version__).set(1)
    drain = Drain()
    # The drain below already waited for in-flight admissions; closing then takes moments.
    runners = [web.AppRunner(make_app(config, drain=drain), access_log=None, shutdown_timeout=5)]
    watcher: asyncio.Task[None] | None = None
    try:
        await runners[0].setup()
        site = web.TCPSite(runners[0], host, port, ssl_context=ssl_context)
        await site.start()
        lines = [f"listening on {_url(site, 'https', host, port)}"]
        if metrics_listen is not None:
            runners.append(web.AppRunner(make_metrics_app(), access_log=None))
            await runners[1].setup()
            metrics_site = web.TCPSite(runners[1], *metrics_listen)
            try:
                await metrics_site.start()
            except OSError as exc:
                exc.filename = "{}:{}".format(*metrics_listen)  # the address the error is about
                raise
            lines.append(f"metrics on {_url(metrics_site, 'http', *metrics_listen)}/metrics")
        if on_ready:
            lines.append(on_ready.format(url=_url(site, "https", host, port)))
        # What start-up made lives as long as the process: keep it out of every later collection,
        # which the warm path otherwise pays for (each admission allocates enough to trigger gen-0 runs).
        gc.collect()
        gc.freeze()
        # Handlers first, then the line that says we listen: a SIGTERM sent as soon as it is read
        # must stop us cleanly, not kill us before any handler exists.
        stop = asyncio.Event()
        received: list[signal.Signals] = []
        loop = asyncio.get_running_loop()

        def stopping(sig: signal.Signals) -> None:
            received.append(sig)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping, sig)
        print("\n".join(lines), flush=True)
        watcher = asyncio.create_task(reloader.run(interval=reload_interval)) if reloader else None
        await stop.wait()
        await drain.drain(bound=MAX_ADMISSION_TIMEOUT)
    finally:
        if watcher is not None:
            watcher.cancel()
        for runner in reversed(runners):
            await runner.cleanup()
        logs.flush()
    log.info("stopped")
    return received[0]

