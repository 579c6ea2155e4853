"""A fault-injecting HTTP(S) proxy the tests own, in front of a real registry on loopback.

Two layers, so that every fault is produced the way a real network produces it:

- a raw TCP front on ``127.0.0.1:<port>`` relays bytes to the HTTP layer, or, for
  connection faults, stops listening (connection refused), accepts and never
  answers (``hang``), or cuts the TLS handshake (``tls_eof``);
- an aiohttp server (plain or TLS) forwards each request to the registry, or
  answers it with a fault: an error status (with or without ``Retry-After``, N
  times then recover), a body reset halfway, a body trickled one byte a second,
  a redirect to another loopback origin, or a redirect loop.

It runs its own event loop in a thread, so sync and async tests can drive it.
Every request it sees is recorded (``seen``) so tests can count where traffic went.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.net import free_ports

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
               "server", "date"}
CONNECTION_FAULTS = {"hang", "tls_eof"}


@dataclass
class Fault:
    """What to do to matching requests; ``times=None`` means until cleared."""

    kind: str  # hang | tls_eof | status | reset | trickle | redirect | redirect_loop | slow
    status: int = 503
    seconds: float = 1.0  # slow: how long the answer waits before it is forwarded
    retry_after: str | None = None
    times: int | None = None
    match: str = ""  # a substring of the request path ("/manifests/", "/blobs/"); "" is every request
    method: str = ""  # only requests of this method ("HEAD"); "" is every method
    used: int = 0

    def take(self, path: str | None, method: str = "") -> bool:
        """True when this request (path None: a new connection) gets the fault, and counts it."""
        if path is not None and (self.match not in path or self.method not in ("", method)):
            return False
        if self.times is not None and self.used >= self.times:
            return False
        self.used += 1
        return True


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    origin: str  # "main" or "other" (the redirect target)


@dataclass
class _State:
    fault: Fault | None = None
    seen: list[Seen] = field(default_factory=list)


class FaultProxy:
    def __init__(self, upstream: str, *, tls: tuple[str, str] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        # the front; a second origin on loopback, where redirects lead; the HTTP layer behind the front
        self.port, self.other_port, self._inner_port = free_ports(3)
        self.host = f"127.0.0.1:{self.port}"
        self._tls = tls
        self._state = _State()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._front: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()
        self._hanging: set[asyncio.Event] = set()

    # -- control, from the test's thread --------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def set_fault(self, fault: Fault | None) -> None:
        with self._lock:
            self._state.fault = fault

    def recover(self) -> None:
        """The registry is back: no fault, listening, and connections left hanging are closed
        (as a restarted server's would be), so lookups stuck on them end now."""
        self.set_fault(None)
        self.accept()
        self._call(self._release())

    def reset(self) -> None:
        """No fault, listening, nothing seen: a clean start for the next test."""
        with self._lock:
            self._state = _State()
        self.accept()

    def refuse(self) -> None:
        """Go down: open connections are cut and new ones refused until :meth:`accept`."""
        self._call(self._close_front())
        self._call(self._cut())

    def accept(self) -> None:
        self._call(self._open_front())

    def seen(self, predicate: Callable[[Seen], bool] = lambda s: True) -> list[Seen]:
        with self._lock:
            return [s for s in self._state.seen if predicate(s)]

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _fault(self, path: str | None, kinds: set[str] | None = None, method: str = "") -> Fault | None:
        with self._lock:
            fault = self._state.fault
            if fault is None or (kinds is not None and fault.kind not in kinds):
                return None
            if kinds is None and fault.kind in CONNECTION_FAULTS:
                return None
            return fault if fault.take(path, method) else None

    # -- inside the proxy's loop ----------------------------------------------------------------

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        context = None
        if self._tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._tls)
        for port in (self._inner_port, self.other_port):
            await web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=context).start()
        await self._open_front()

    async def _stop(self) -> None:
        await self._close_front()
        await self._cut()
        await self._runner.cleanup()
        await self._session.close()

    async def _open_front(self) -> None:
        if self._front is None:
            self._front = await asyncio.start_server(self._relay, "127.0.0.1", self.port,
                                                     reuse_address=True)

    async def _cut(self) -> None:
        for writer in list(self._held):
            writer.close()

    async def _release(self) -> None:
        for released in self._hanging:
            released.set()
        self._hanging.clear()

    async def _close_front(self) -> None:
        if self._front is not None:
            self._front.close()
            self._front = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.add(writer)
        try:
            fault = self._fault(None, CONNECTION_FAULTS)
            if fault is not None and fault.kind == "hang":
                released = asyncio.Event()
                self._hanging.add(released)
                await released.wait()  # accepted; never a byte back until recover() or stop()
                return
            if fault is not None:  # tls_eof: read the ClientHello, then hang up mid-handshake
                await reader.read(1024)
                return
            inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", self._inner_port)
            await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._held.discard(writer)
            writer.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        origin = "other" if request.url.port == self.other_port else "main"
        with self._lock:
            self._state.seen.append(Seen(request.method, request.path, request.query_string,
                                         dict(request.headers), origin))
        fault = self._fault(request.path, method=request.method) if origin == "main" else None
        scheme = "https" if self._tls else "http"
        if fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return web.json_response({"errors": [{"code": "UNAVAILABLE", "message": "fault"}]},
                                     status=fault.status, headers=headers)
        if fault is not None and fault.kind == "redirect":
            raise web.HTTPTemporaryRedirect(f"{scheme}://127.0.0.1:{self.other_port}{request.path_qs}")
        if fault is not None and fault.kind == "redirect_loop":
            raise web.HTTPTemporaryRedirect(f"{scheme}://{self.host}{request.path_qs}")
        if fault is not None and fault.kind == "slow":  # a registry that answers, late
            await asyncio.sleep(fault.seconds)
            fault = None
        status, headers, body = await self._forward(request)
        if fault is None or status != 200 or request.method == "HEAD":
            return web.Response(status=status, headers=headers, body=body)
        return await self._broken_body(request, fault, headers, body)

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "authorization")}
        async with self._session.request(
            request.method, f"{self.upstream}{request.path_qs}", headers=headers,
            data=await request.read(), allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return upstream.status, kept, body

    async def _broken_body(self, request: web.Request, fault: Fault, headers: dict[str, str],
                           body: bytes) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        if fault.kind == "trickle":
            for i in range(len(body)):
                await response.write(body[i:i + 1])
                await asyncio.sleep(1)  # the fault itself: one byte a second
            return response
        # reset: half the body, then a TCP RST (SO_LINGER 0) instead of the rest
        await response.write(body[: len(body) // 2])
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return response


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.write_eof()
