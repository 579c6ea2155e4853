"""Loopback helpers shared by the fixtures."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def poll(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Call *check* until it returns a value, for at most *timeout* seconds.

    For waiting on a process to come up, where there is no event to wait on;
    bounded, and the error says what never happened.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # not up yet
            last, value = exc, None
        if value is not None:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:g} s (last error: {last!r})")
