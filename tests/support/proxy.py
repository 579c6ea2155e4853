"""A counting (and optionally slow) HTTP proxy in front of the loopback registry.

Speaks the registry's own protocol both ways, so the webhook sees a registry;
what it adds is a record of every request (to count manifests and blobs fetched,
tag requests made) and a delay before each blob (a registry far away).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import web

_FORWARDED_REQUEST = ("Accept", "Authorization", "Range")
_FORWARDED_RESPONSE = ("Content-Type", "Docker-Content-Digest", "Content-Length", "WWW-Authenticate",
                       "Docker-Distribution-Api-Version")


class CountingProxy:
    """Forwards ``/v2/…`` to *upstream* (``http://HOST:PORT``) and counts ``(method, path)``."""

    def __init__(self, upstream: str, *, blob_delay: float = 0.0) -> None:
        self.upstream = upstream
        self.blob_delay = blob_delay
        self.fail_status: int | None = None  # set: every request is answered with it (a failing registry)
        self.requests: Counter[tuple[str, str]] = Counter()
        self.host = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def count(self, fragment: str, method: str = "GET") -> int:
        """Requests with *method* whose path contains *fragment* (``/manifests/``, a digest, …)."""
        return sum(n for (m, path), n in self.requests.items() if m == method and fragment in path)

    def reset(self) -> None:
        self.requests.clear()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests[(request.method, request.path)] += 1
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="failing on purpose\n")
        if self.blob_delay and "/blobs/" in request.path:
            await asyncio.sleep(self.blob_delay)  # the far-away registry, not a synchronisation
        assert self._session is not None
        headers = {k: request.headers[k] for k in _FORWARDED_REQUEST if k in request.headers}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         headers=headers, allow_redirects=True) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key in _FORWARDED_RESPONSE:
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(256 * 1024):
                    await response.write(chunk)
            await response.write_eof()
            return response

    async def start(self) -> CountingProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.host = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@contextmanager
def proxy_thread(upstream: str, *, blob_delay: float = 0.0) -> Iterator[CountingProxy]:
    """The proxy on its own event loop in a thread, for tests and benchmarks that are not async."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = CountingProxy(upstream, blob_delay=blob_delay)
    asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=30)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
