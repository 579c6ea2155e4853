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

import asyncio
import atexit
import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # types only: the root modules import nothing above them
    from mutator.decide import admission
    from mutator.decide.findings import Finding
    from mutator.decide.images import ImageFailure

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


def _utc(created: float) -> str:
    """``2026-11-23T12:00:00.123+00:00``, as text (see :func:`_utc_bytes`)."""
    return _utc_bytes(created).decode()


def _utc_bytes(created: float) -> bytes:
    """``2026-11-23T12:00:00.123+00:00``: the second is formatted once, then only milliseconds."""
    global _SECOND
    second = int(created)
    at, pattern = _SECOND
    if second != at:  # one second at a time (lines arrive in time order), swapped in one store
        pattern = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%%03d+00:00").encode()
        _SECOND = (second, pattern)
    return pattern % ((created - second) * 1000)  # %d truncates, as int() does


_SECOND: tuple[int, bytes] = (-1, b"")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg and the record's event fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record.created),
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


class _Batch:
    """Admission lines, written to stderr together: one write per ``FLUSH_SECONDS``, not one per line.

    Why: a rollout's patched Pods each get a line, and going through ``logging``
    (a record, a lock, a formatter, a write and a flush) cost each warm admission
    more than deciding it. These lines are formatted here exactly as
    :class:`JsonFormatter` would, and only while that formatter on stderr is the
    one handler: with any other handler (a test's, a library user's) they go
    through ``logging`` like every other line. A line waits at most
    ``FLUSH_SECONDS``; :func:`flush` runs at shutdown.
    """

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None  # the JSON handler setup() installed, if any
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pending(self) -> bool:
        return bool(self._lines)

    def usable(self, level: int) -> bool:
        handlers = logging.root.handlers
        return (self.handler is not None and len(handlers) == 1 and handlers[0] is self.handler
                and log.isEnabledFor(level))

    def add(self, line: bytes) -> None:
        self._lines.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a command-line run): nothing would flush it later
            self.flush()
            return
        # A timer of a loop that has since ended (one server after another in a process) never fires.
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = b"\n".join(self._lines) + b"\n"
        self._lines.clear()
        stream = sys.stderr
        try:
            raw = getattr(stream, "buffer", None)
            if raw is not None:  # the bytes as they are, behind whatever text is still buffered
                stream.flush()
                raw.write(data)
                raw.flush()
            else:
                stream.write(data.decode())
                stream.flush()
        except (OSError, ValueError):  # stderr closed: as logging does, never fail the caller
            pass


# Short, so that a flush is a small write: a long batch would hold the loop (and the admissions
# waiting on it) for the whole write at once.
FLUSH_SECONDS = 0.01
_BATCH = _Batch()
flush = _BATCH.flush
atexit.register(flush)


def setup(*, fmt: str = "text", verbose: bool = False) -> None:
    """Send log records to stderr in *fmt* (``json`` or ``text``); calling again replaces only our handler."""
    handler = _Stderr()
    _BATCH.flush()
    _BATCH.handler = handler if fmt == "json" else None
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Neither format writes the caller's file and line, thread or process (the logging HOWTO's
    # "Optimization"): not collecting them takes a third off every line, which the patched
    # admissions of a rollout each write.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+; harmless before
    os.environ[FORMAT_ENV] = fmt


def event(message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    if _BATCH.pending:  # admission lines still waiting go first: the log stays in time order
        _BATCH.flush()
    log.log(level, message, extra={EVENT: fields})


def admission_line(*, review: admission.Review, mode: str, result: str, allowed: bool, message: str,
                   warnings: tuple[str, ...], found: Sequence[Finding]) -> AdmissionLine | None:
    """The line of one decision that changed or stopped something (see :class:`AdmissionLine`);
    ``None`` for a plain allow, which logs nothing.

    *found* are the decision's per-container findings, which already carry what
    was read from each image (digest, USER, uid/gid).
    """
    if result not in ("patched", "refused") and not warnings:
        return None
    return AdmissionLine(review=review, mode=mode, result=result, allowed=allowed,
                         reason=message or "; ".join(warnings), found=found)


class AdmissionLine:
    """One decision's admission line, rendered once: a rollout's replicas write it with their own
    time, uid, dry run and duration filled in (the decisions memo keeps it with the decision).

    The bytes are exactly what :class:`JsonFormatter` writes for the same event;
    they are used only while the batch is (see :class:`_Batch`), and a name that
    orjson cannot encode (a lone surrogate) goes through ``logging`` instead.
    """

    __slots__ = ("_fields", "_head", "_level", "_middle", "_tail")

    def __init__(self, *, review: admission.Review, mode: str, result: str, allowed: bool, reason: str,
                 found: Sequence[Finding]) -> None:
        self._level = logging.WARNING if not allowed else logging.INFO
        self._fields: dict[str, Any] = {
            "kind": "admission", "namespace": review.namespace, "pod": review.name, "uid": None,
            "operation": review.operation, "dry_run": None, "mode": mode, "decision": result,
            "reason": reason, "containers": _containers(found)}
        try:
            self._head: bytes | None = b'",' + orjson.dumps({
                "level": _LEVEL_NAMES[self._level], "logger": log.name, "msg": "admission " + result,
                "kind": "admission", "namespace": review.namespace, "pod": review.name})[1:-1] + b',"uid":'
            self._middle = b',"operation":' + orjson.dumps(review.operation) + b',"dry_run":'
            self._tail = b"," + orjson.dumps({
                "mode": mode, "decision": result, "reason": reason,
                "containers": self._fields["containers"]})[1:-1] + b',"duration_ms":'
        except TypeError:  # a lone surrogate in a name: the standard library's escaping, via logging
            self._head = None

    def write(self, review: admission.Review, seconds: float) -> None:
        """Write the line for *review* (this decision's, or a replica's), answered in *seconds*."""
        duration = round(seconds * 1000, 3)
        if self._head is not None and _BATCH.usable(self._level):
            try:
                uid = orjson.dumps(review.uid)
            except TypeError:
                pass
            else:
                _BATCH.add(b"".join((
                    b'{"time":"', _utc_bytes(time.time()), self._head, uid, self._middle,
                    b"true" if review.dry_run else b"false", self._tail, orjson.dumps(duration), b"}")))
                return
        fields = self._fields
        event(f"admission {fields['decision']}", level=self._level, **{
            **fields, "uid": review.uid, "dry_run": review.dry_run, "duration_ms": duration})


_LEVEL_NAMES = {logging.INFO: "info", logging.WARNING: "warning"}


def _containers(found: Sequence[Finding]) -> list[dict[str, Any]]:
    containers = []
    for f in found:
        entry: dict[str, Any] = {"container": f.name, "image": f.container.image, "decision": f.outcome}
        if f.digest is not None:
            entry.update(digest=f.digest, user=(f.user or "")[:MAX_FIELD_CHARS], uid=f.uid, gid=f.gid)
        containers.append(entry)
    return containers


def registry_failure(failure: ImageFailure, *, seconds: float) -> None:
    """One line per failed lookup (coalesced waiters share it, so it is logged once)."""
    event(
        "registry lookup failed", level=logging.WARNING, kind="registry_failure",
        image=failure.image, temporary=failure.temporary, reason=failure.message,
        duration_ms=round(seconds * 1000, 3),
    )


def bad_request(*, reason: str, path: str, remote: str | None) -> None:
    """One line per 400, with its reason, path and peer: a misrouted webhook rule shows up here."""
    event("bad request", level=logging.WARNING, kind="bad_request", reason=reason, path=path, remote=remote)
