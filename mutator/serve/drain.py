"""Graceful shutdown: on SIGTERM, say "not ready", finish what is in flight, then stop.

Why this order: the API server keeps sending admissions to a pod until it sees
the endpoint gone (the chart's preStop delay keeps the pod serving meanwhile).
So on SIGTERM the pod reports not ready (``/readyz`` answers 503), keeps
listening and answering whatever still arrives, and closes its listener only
once no admission is in flight (or a bound has passed). No admission is
dropped, so ``failurePolicy: Fail`` never refuses a Pod because of a rollout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from mutator import metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Drain:
    """Counts admissions in flight and carries the draining flag that /readyz reports."""

    def __init__(self) -> None:
        self.draining = False
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # read at scrape time, not written per admission
        metrics.INFLIGHT_ADMISSIONS.set_function(lambda: self.inflight)

    def track(self, handler: Handler) -> Handler:
        """*handler*, counted while in flight. A wrapper on the admission routes rather than a
        middleware: a middleware runs for every path and costs each admission a coroutine layer."""
        async def tracked(request: web.Request) -> web.StreamResponse:
            self.inflight += 1
            if self.inflight == 1:
                self._idle.clear()
            try:
                return await handler(request)
            finally:
                self.inflight -= 1
                if self.inflight == 0:
                    self._idle.set()

        return tracked

    async def drain(self, *, bound: float) -> None:
        """Report not ready, then wait until nothing is in flight (at most *bound* seconds)."""
        self.draining = True
        log.info("shutting down: not ready; %d admissions in flight", self.inflight)
        try:
            async with asyncio.timeout(bound):
                await self._idle.wait()
        except TimeoutError:
            log.warning("shutting down with %d admissions still in flight after %g s",
                        self.inflight, bound)
