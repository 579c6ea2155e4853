"""Serving-certificate reload: cert-manager (or a Secret volume update) rewrites the files in place.

Why in place: restarting the pods on every rotation would cost a rollout and,
with ``failurePolicy: Fail``, risk refusing Pods cluster-wide. The files are
checked every few seconds by ``stat`` (mtime, inode, size: a Secret volume swaps
a symlink, so the inode changes even when the mtime does not), which costs
microseconds. A change is loaded into the *same* ``SSLContext``: OpenSSL
copies the context's certificate into each new connection, so new handshakes
present the new certificate while open connections go on undisturbed.

A pair is checked in a scratch context before it touches the live one: the
live ``load_cert_chain`` installs the certificate before it checks the key,
so a pair caught between cert-manager's two writes would otherwise leave the
live context with the new certificate and the old key, and every handshake
would fail. Both files are read once and loaded from that snapshot, so the
pair checked is the pair installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator

from mutator import metrics
from mutator.serve import tls

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int, int], ...]


def file_stamp(*paths: str) -> Stamp | None:
    """mtime, inode, size and device of each file the paths resolve to; ``None`` if one is missing.

    A Secret volume swaps a symlink, so the inode changes even when the mtime does not.
    """
    try:
        stats = [os.stat(path) for path in paths]  # follows the symlinks to the files in use
    except OSError:
        return None
    return tuple((s.st_mtime_ns, s.st_ino, s.st_size, s.st_dev) for s in stats)


class CertReloader:
    def __init__(self, context: ssl.SSLContext, *, cert_file: str, key_file: str) -> None:
        self._context = context
        self._cert_file = cert_file
        self._key_file = key_file
        self._stamp = self._stat()
        self.reloads = 0
        metrics.TLS_NOT_AFTER.set(tls.not_after(cert_file))

    def _stat(self) -> Stamp | None:
        return file_stamp(self._cert_file, self._key_file)  # None mid-rotation: keep what is loaded

    def check(self) -> bool:
        """Load the files if they changed since the last look; True if a new certificate is in use.

        A pair that does not load (a key that does not match its certificate
        while one file is written before the other) leaves the old one in
        use; the next change of either file tries again.
        """
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            with _snapshot(self._cert_file, self._key_file) as (cert, key):
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)  # raises on a mismatch
                self._context.load_cert_chain(cert, key)
                not_after = tls.not_after(cert)
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.warning("serving certificate changed but does not load, keeping the old one: %s", exc)
            return False
        self.reloads += 1
        metrics.TLS_NOT_AFTER.set(not_after)
        log.info("serving certificate reloaded from %s (expires at %d)", self._cert_file, not_after)
        return True

    async def run(self, *, interval: float) -> None:
        """Check every *interval* seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()


@contextlib.contextmanager
def _snapshot(cert_file: str, key_file: str) -> Iterator[tuple[str, str]]:
    """Paths to private copies of both files, read once (in memory where the OS allows)."""
    contents = []
    for path in (cert_file, key_file):
        with open(path, "rb") as handle:
            contents.append(handle.read())
    with contextlib.ExitStack() as stack:
        paths = []
        for data in contents:
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create("nonroot-mutator-tls")
                stack.callback(os.close, fd)
                with open(fd, "wb", closefd=False) as handle:
                    handle.write(data)
                paths.append(f"/proc/self/fd/{fd}")
            else:  # pragma: no cover - not Linux
                copy = stack.enter_context(tempfile.NamedTemporaryFile())
                copy.write(data)
                copy.flush()
                paths.append(copy.name)
        yield paths[0], paths[1]
