"""Admission lines written in batches: the same line the JSON formatter writes, in time order, and only
when that formatter on stderr is the one handler."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from mutator import logs
from mutator.decide import admission
from mutator.decide.admission import Container
from mutator.decide.findings import Finding

REVIEW = admission.Review(uid="u-1", operation="CREATE", kind="Pod", resource="pods", sub_resource="",
                          namespace="team", name="web-*", object=None, old_object=None, dry_run=False)
FOUND = (Finding(Container("containers", "app", "img/app:1", "/spec/containers/0", None), "patch", "USER app",
                 user="app", uid=1000, gid=1000, digest="sha256:" + "a" * 64),)


class Err:
    """What the process wrote to stderr so far (pytest swaps sys.stderr per test phase)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._seen = ""

    def getvalue(self) -> str:
        self._seen += self._capsys.readouterr().err
        return self._seen


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Err]:
    buffer = Err(capsys)
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    root.handlers = []  # pytest's own capture handlers aside: ours is to be the only one
    logs.setup(fmt="json")
    yield buffer
    logs.flush()
    root.handlers, _ = kept
    root.setLevel(kept[1])
    logs._BATCH.handler = None


def alone() -> None:
    """Our handler as the only one: pytest adds its own to the root logger for each test phase."""
    assert logs._BATCH.handler is not None
    logging.getLogger().handlers = [logs._BATCH.handler]


def decided(**overrides: Any) -> None:
    arguments: dict[str, Any] = dict(review=REVIEW, mode="enforce", result="patched", seconds=0.0012,
                                     allowed=True, message="", warnings=(), found=FOUND)
    arguments |= overrides
    seconds = arguments.pop("seconds")
    line = logs.admission_line(**arguments)
    if line is not None:
        line.write(arguments["review"], seconds)


def lines(buffer: Err) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_batched_line_is_the_line_the_formatter_writes(stderr):
    alone()
    decided()  # no loop running, so nothing would flush it later: written at once
    assert not logs._BATCH.pending
    batched = lines(stderr)[0]
    logs._BATCH.handler = None  # the same event through logging and the JSON formatter
    decided()
    formatted = lines(stderr)[1]
    times = batched.pop("time"), formatted.pop("time")
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", t) for t in times)
    assert batched == formatted
    assert batched["containers"][0] == {
        "container": "app", "image": "img/app:1", "decision": "patch", "digest": "sha256:" + "a" * 64,
        "user": "app", "uid": 1000, "gid": 1000}


async def test_lines_wait_at_most_the_flush_interval_and_stay_in_time_order(stderr):
    loop = asyncio.get_running_loop()
    alone()
    decided()
    decided(result="refused", allowed=False, message="runs as root")
    timer = logs._BATCH._timer
    assert timer is not None and timer.when() <= loop.time() + logs.FLUSH_SECONDS
    assert stderr.getvalue() == ""
    logs.event("registry lookup failed", level=logging.WARNING, kind="registry_failure")  # flushes first
    assert [(line["msg"], line["level"]) for line in lines(stderr)] == [
        ("admission patched", "info"), ("admission refused", "warning"),
        ("registry lookup failed", "warning")]
    assert logs._BATCH._timer is None and not logs._BATCH.pending


def test_with_another_handler_every_line_goes_through_logging(stderr, caplog):
    with caplog.at_level(logging.INFO):
        decided()
    assert not logs._BATCH.pending
    assert [r.getMessage() for r in caplog.records] == ["admission patched"]


def test_the_text_format_is_never_batched(stderr):
    logs.setup(fmt="text")
    decided()
    assert not logs._BATCH.pending
    assert "admission patched" in stderr.getvalue() and not stderr.getvalue().startswith("{")


def test_a_timer_left_by_an_ended_loop_does_not_hold_lines_back(stderr):
    async def admit() -> None:
        alone()
        decided()

    asyncio.run(admit())  # its loop ends before the timer fires
    assert logs._BATCH.pending and stderr.getvalue() == ""

    async def later() -> None:
        alone()
        decided()
        for _ in range(200):  # the new loop's timer writes them: poll, bounded (1 s)
            if stderr.getvalue():
                return
            await asyncio.sleep(0.005)

    asyncio.run(later())
    assert [line["uid"] for line in lines(stderr)] == ["u-1", "u-1"]
    assert not logs._BATCH.pending


@pytest.mark.parametrize("seconds", [0.0, 59.9996, 1_733_400_000.5004, 1_733_400_000.0009, 4_102_444_799.999])
def test_a_line_s_time_is_utc_to_the_millisecond_truncated(seconds):
    expected = datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="milliseconds")
    assert logs._utc(seconds) == expected
    assert logs._utc_bytes(seconds) == expected.encode()
    # the second changes: the next line is not written with the last one's
    assert logs._utc(seconds + 1) == datetime.datetime.fromtimestamp(
        seconds + 1, datetime.UTC).isoformat(timespec="milliseconds")
