"""Small Go programs the tests and benchmarks run, built offline once per source.

Debian's Go with ``GO111MODULE=off`` and ``GOPROXY=off``: nothing is fetched, imports come
from the program's own GOPATH and the *gopath* entries it is given (``/usr/share/gocode``
for the Go source Debian packages). The binary is cached under
``~/.cache/nonroot-mutator/<cache>/<key>/``, keyed by the program's source and whatever else
it is built from, so a second run (or a second session at once) reuses it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path


class GoBuildError(RuntimeError):
    """``go build`` failed; the message is its stderr."""


def cache_dir(cache: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nonroot-mutator" / cache


def build(main_go: str, *, name: str, cache: str, gopath: Sequence[Path] = (),
          built_from: bytes = b"") -> Path:
    """The binary *name* built from *main_go* (package main), from the cache when it is there.

    *built_from* is added to the cache key: the bytes of sources outside *main_go* that the
    binary depends on, so that an upgraded package rebuilds it.
    """
    root = cache_dir(cache)
    key = hashlib.sha256(main_go.encode() + built_from).hexdigest()[:16]
    binary = root / key / name
    if binary.is_file():
        return binary
    own = root / key / "gopath"
    package = own / "src" / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "main.go").write_text(main_go)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": ":".join(str(p) for p in (own, *gopath)),
           "GOFLAGS": "", "GOCACHE": str(root / "gocache"), "GOPROXY": "off", "CGO_ENABLED": "0"}
    partial = f"{binary}.{os.getpid()}.tmp"  # another session building at once keeps its own
    built = subprocess.run(["go", "build", "-o", partial, name], cwd=own, env=env,
                           capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        raise GoBuildError(f"building {name} failed:\n{built.stderr}")
    os.replace(partial, binary)
    return binary
