"""Loopback helpers shared by the fixtures: free ports, and bounded waits for processes to come up."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that value.

    Why: controllers act asynchronously, so tests must wait for an observable state rather than sleep for a
    guessed time. The wait is bounded by ``timeout`` seconds and the error names ``what`` was awaited and the
    last value seen. Exceptions listed in ``retry_on`` (e.g. connection refused while a server starts) count
    as "not yet"; any other exception propagates at once, so a broken predicate is not mistaken for slowness.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except retry_on as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last result: {last!r}")
        time.sleep(min(interval, remaining))


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All sockets are held open together so the kernel cannot hand out the same port twice. Another process
    may still grab a port before a component binds it; ``KubeCluster.start`` retries on that.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]
