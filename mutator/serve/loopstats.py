"""Event-loop health on /metrics: how late the loop wakes up, and how many tasks are alive.

A blocked loop delays every admission at once, and tasks that pile up are how a
leak shows first, so both are worth a gauge. The cost is one timer per interval.
Each wake-up also applies the counts the warm path noted (:func:`mutator.metrics.tally`),
which bounds how many wait between scrapes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from aiohttp import web

from mutator import metrics

INTERVAL = 0.25  # seconds between wake-ups
WINDOW = 20  # the lag gauge is the worst of the last WINDOW wake-ups (5 s)


async def measure(*, interval: float = INTERVAL, window: int = WINDOW) -> None:
    """Sleep *interval*, see how much later than asked the loop woke up; forever."""
    loop = asyncio.get_running_loop()
    recent: deque[float] = deque(maxlen=window)
    while True:
        before = loop.time()
        await asyncio.sleep(interval)
        recent.append(max(0.0, loop.time() - before - interval))
        metrics.EVENT_LOOP_LAG.set(max(recent))
        metrics.TASKS_ALIVE.set(len(asyncio.all_tasks(loop)))
        metrics.apply_tallies()  # the warm path's counts, a batch per wake-up (see metrics.tally)


async def watch(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: measure while the server runs."""
    task = asyncio.create_task(measure(), name="loopstats")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
