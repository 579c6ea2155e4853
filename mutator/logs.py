"""Structured logs: JSON lines by default, one line per event an operator acts on.

Why JSON: a cluster's log pipeline (Loki, Elasticsearch, Cloud Logging) indexes
fields, so "every refusal in namespace X" is a query rather than a regex. What is
logged: a patched or refused admission (or one allowed with warnings), a
registry failure, and an HTTP 400 (a misrouted webhook rule shows up there). A
plain allowed admission logs nothing at INFO: that is the warm path, and most
admissions. Only the fields named here are written: no request bodies, no
headers, so never a credential.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from mutator import admission
from mutator.images import ImageFailure, ImageUser

log = logging.getLogger("nonroot_mutator.events")

FORMATS = ("json", "text")
FORMAT_ENV = "MUTATOR_LOG_FORMAT"  # set by setup(), so child processes log in the same format
EVENT = "event"  # the LogRecord attribute that carries an event's fields
MAX_FIELD_CHARS = 256  # an image's USER is whatever its config says: bounded in every line


def _dumps(value: Any) -> str:
    """JSON for a log line. A Pod's names are the requester's: a lone surrogate (invalid UTF-8, which
    orjson refuses) is written escaped by the standard library rather than losing the line."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return json.dumps(value, default=str, ensure_ascii=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg and the record's event fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, EVENT, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _dumps(line)


class TextFormatter(logging.Formatter):
    """The classic line, with an event's fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, EVENT, None)
        if isinstance(fields, dict):
            text += " " + " ".join(f"{k}={_dumps(v)}" for k, v in fields.items())
        return text


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (it may be swapped, e.g. in tests)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup(*, fmt: str = "text", verbose: bool = False) -> None:
    """Send log records to stderr in *fmt* (``json`` or ``text``); calling again replaces only our handler."""
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ[FORMAT_ENV] = fmt


def event(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, message, extra={EVENT: fields})


def admission_decided(*, review: admission.Review, mode: str, result: str, seconds: float,
                      allowed: bool, message: str, warnings: tuple[str, ...],
                      outcomes: tuple[tuple[str, str], ...],
                      known: Callable[[str], Any]) -> None:
    """One line for an admission that changed or stopped something; nothing for a plain allow.

    *known* maps an image to what the resolver cached for it (for the digest); it is
    only asked here, off the plain-allow path.
    """
    if result not in ("patched", "refused") and not warnings:
        return
    target = admission.target(review)
    images = {c.name: c.image for c in target.containers} if target is not None else {}
    containers = []
    for name, outcome in outcomes:
        image = images.get(name)
        found = known(image) if image else None
        entry: dict[str, Any] = {"container": name, "image": image, "decision": outcome}
        if isinstance(found, ImageUser):
            entry.update(digest=found.digest, user=found.user[:MAX_FIELD_CHARS], uid=found.uid, gid=found.gid)
        containers.append(entry)
    event(
        "admission " + result,
        level=logging.WARNING if not allowed else logging.INFO,
        kind="admission", namespace=review.namespace, pod=review.name, uid=review.uid,
        operation=review.operation, dry_run=review.dry_run, mode=mode, decision=result,
        reason=message or "; ".join(warnings), containers=containers,
        duration_ms=round(seconds * 1000, 3),
    )


def registry_failure(failure: ImageFailure, *, seconds: float) -> None:
    """One line per failed lookup (coalesced waiters share it, so it is logged once)."""
    event(
        "registry lookup failed", level=logging.WARNING, kind="registry_failure",
        image=failure.image, temporary=failure.temporary, reason=failure.message,
        duration_ms=round(seconds * 1000, 3),
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def log_bad_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log every 400 with its reason, path and peer: a misrouted rule is otherwise invisible."""
    response = await handler(request)
    if response.status == 400:
        reason = ""
        body = getattr(response, "body", None)
        if isinstance(body, bytes):
            try:
                reason = str(orjson.loads(body).get("error", ""))
            except (orjson.JSONDecodeError, AttributeError):
                reason = ""
        event("bad request", level=logging.WARNING, kind="bad_request", reason=reason,
              path=request.path, remote=request.remote)
    return response
