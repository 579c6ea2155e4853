"""Go ``time.Duration`` strings (``10s``, ``1m30s``, ``500ms``), as Kubernetes writes them. Pure.

The API server's ``?timeout=`` and a credential provider's ``cacheDuration`` are
both Go durations; one parser keeps them read the same way.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse(text: Any) -> float:
    """*text* in seconds (``"0"`` is 0); raises :class:`ValueError` for anything else."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"not a duration: {text!r}")
    if text == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise ValueError(f"not a duration: {text!r}")
    return total
