"""Docker config reload: a rotated pull-credentials Secret is used without restarting ``serve``.

Why: cluster admins mount ``docker_config`` from a Secret and rotate it when a
registry password changes. The kubelet then swaps the file in place (it writes a
new directory and renames the volume's ``..data`` symlink onto it); a server that
kept the credentials it read at start would be refused by the registry until
someone restarted it, and with ``failurePolicy: Fail`` every Pod of a private
image would be refused meanwhile.

As :class:`mutator.serve.certreload.CertReloader` does for the serving certificate, the file
is checked every few seconds by ``stat`` (mtime, inode, size and device of the
file the path resolves to: a symlink swap changes the inode even when the mtime
does not), which costs microseconds. A changed file is read once and parsed from
those bytes; its keyring replaces the old one in the shared
:class:`~mutator.resolve.registry.authn.credentials.CredentialSources`, so the resolver and the
access gate ask with the new credentials from their next lookup on.

A file caught mid-write, or that is not JSON, keeps the previous keyring and logs
one warning (its next change is tried again); so does a file that disappears. A
rewrite with the very same bytes is not a reload. Nothing cached has to be
forgotten: answers are content-addressed, and registry tokens and access checks
are keyed by credential fingerprint, so new credentials get their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from mutator import metrics
from mutator.errors import ConfigError
from mutator.resolve.registry.authn.credentials import CredentialSources, parse_docker_config
from mutator.serve.certreload import file_stamp

log = logging.getLogger(__name__)

_LOADED = metrics.DOCKER_CONFIG_RELOADS.labels("loaded")
_INVALID = metrics.DOCKER_CONFIG_RELOADS.labels("invalid")


class DockerConfigReloader:
    """Keeps *sources*' Docker config keyring in step with the file at *path*."""

    def __init__(self, sources: CredentialSources, path: str) -> None:
        self._sources = sources
        self._path = path
        self._stamp = file_stamp(self._path)
        self._digest = ""
        self._missing = False
        self.reloads = 0
        # Read once more now, after the stamp: a change between the caller's read and this
        # stat would otherwise go unseen until the file changed again.
        self._load(quiet=True)

    def check(self) -> bool:
        """Load the file if it changed since the last look; True if new credentials are in use."""
        stamp = file_stamp(self._path)
        if stamp is None:
            if not self._missing:  # said once, not every few seconds
                self._missing = True
                log.warning("docker config %s is gone; keeping the credentials read before", self._path)
            return False
        self._missing = False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return self._load(quiet=False)

    def _load(self, *, quiet: bool) -> bool:
        """Read and parse the file once; install its keyring unless it is the same bytes again."""
        try:
            with open(self._path, "rb") as handle:
                raw = handle.read()
            keyring = parse_docker_config(raw, path=self._path)
        except (OSError, ConfigError) as exc:
            if not quiet:
                _INVALID.inc()
            why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            log.warning("docker config %s does not load, keeping the credentials read before: %s",
                        self._path, why)
            return False
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:
            return False
        self._digest = digest
        self._sources.use_docker_config(keyring)
        if quiet:
            return False
        self.reloads += 1
        _LOADED.inc()
        log.info("docker config reloaded from %s (%d registry keys)", self._path, len(keyring))
        return True

    async def run(self, *, interval: float) -> None:
        """Check every *interval* seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()
