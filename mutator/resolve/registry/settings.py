"""What the registry code needs to know of the configuration, said as the shape it reads.

The registry client is configured, not configuring: it reads a few fields of a
registry's settings and of the node's platform, and imports no application
config to do so. :class:`mutator.config.RegistryConfig` and
:class:`mutator.config.Platform` have these shapes; a test may pass anything
else that does.
"""

from __future__ import annotations

from typing import Protocol


class RegistrySettings(Protocol):
    """How to reach one registry host: plain HTTP or TLS (and with what), and its mirrors."""

    @property
    def plain_http(self) -> bool: ...
    # TLS: the CA to trust, a client certificate for mutual TLS, or (a lab registry) no checks
    @property
    def ca_file(self) -> str | None: ...
    @property
    def cert_file(self) -> str | None: ...
    @property
    def key_file(self) -> str | None: ...
    @property
    def insecure_skip_verify(self) -> bool: ...
    # hosts tried in order before this one
    @property
    def mirrors(self) -> tuple[str, ...]: ...


class PlatformSpec(Protocol):
    """The platform an index entry is chosen for, as the node would choose it."""

    @property
    def os(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def variant(self) -> str | None: ...

