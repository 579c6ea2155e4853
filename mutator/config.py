"""The configuration file (YAML; path from ``--config`` or ``MUTATOR_CONFIG``).

Every setting has a default that works for public registries, so a file is only
needed for private ones (plain HTTP, a custom CA) or to tune the cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from mutator.errors import ConfigError

ENV_VAR = "MUTATOR_CONFIG"


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"platform must be OS/ARCH[/VARIANT], got {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """How to reach one registry host (``HOST[:PORT]``, as it appears in image names)."""

    plain_http: bool = False
    ca_file: str | None = None
    # Client certificate for registries that demand mutual TLS (both or neither).
    cert_file: str | None = None
    key_file: str | None = None
    # Trust any certificate: for a lab registry only, and loudly warned about.
    insecure_skip_verify: bool = False
    # Hosts tried in order before this registry, as containerd's hosts.toml mirrors are.
    mirrors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"))
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict)
    # How long a resolved tag is trusted; a digest-pinned image never changes.
    cache_ttl_seconds: float = 300.0
    cache_max_entries: int = 10_000
    # Upper bound of one registry lookup, shared by every admission waiting on it.
    lookup_timeout_seconds: float = 30.0
    # Used when the API server sends no ?timeout (its own default is 10 s).
    default_admission_timeout_seconds: float = 10.0

    def registry(self, host: str) -> RegistryConfig:
        return self.registries.get(host) or RegistryConfig()


def load(path: str | None = None) -> Config:
    """Load the file at *path*, else at ``$MUTATOR_CONFIG``, else the defaults."""
    path = path or os.environ.get(ENV_VAR)
    if not path:
        return Config()
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return from_mapping(data, source=path)


_REGISTRY_KEYS = ("plain_http", "ca_file", "cert_file", "key_file", "insecure_skip_verify", "mirrors")


def _registry(settings: Any, *, where: str) -> RegistryConfig:
    if not isinstance(settings, dict) or set(settings) - set(_REGISTRY_KEYS):
        raise ConfigError(f"{where} takes {', '.join(_REGISTRY_KEYS)} only")
    for key in ("ca_file", "cert_file", "key_file"):
        path = settings.get(key)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{where}.{key} {path} does not exist")
    if (settings.get("cert_file") is None) != (settings.get("key_file") is None):
        raise ConfigError(f"{where}: cert_file and key_file go together")
    mirrors = settings.get("mirrors") or []
    if not isinstance(mirrors, list) or not all(isinstance(m, str) and m and "/" not in m for m in mirrors):
        raise ConfigError(f"{where}.mirrors must be a list of HOST[:PORT]")
    return RegistryConfig(
        plain_http=bool(settings.get("plain_http", False)),
        ca_file=settings.get("ca_file"),
        cert_file=settings.get("cert_file"),
        key_file=settings.get("key_file"),
        insecure_skip_verify=bool(settings.get("insecure_skip_verify", False)),
        mirrors=tuple(mirrors),
    )


def from_mapping(data: Any, *, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    known = {
        "platform", "registries", "cache_ttl_seconds", "cache_max_entries",
        "lookup_timeout_seconds", "default_admission_timeout_seconds",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)}")
    registries = {
        str(host): _registry(settings or {}, where=f"{source}: registries.{host}")
        for host, settings in (data.get("registries") or {}).items()
    }
    defaults = Config()
    try:
        return Config(
            platform=Platform.parse(data.get("platform", str(defaults.platform))),
            registries=registries,
            cache_ttl_seconds=float(data.get("cache_ttl_seconds", defaults.cache_ttl_seconds)),
            cache_max_entries=int(data.get("cache_max_entries", defaults.cache_max_entries)),
            lookup_timeout_seconds=float(
                data.get("lookup_timeout_seconds", defaults.lookup_timeout_seconds)
            ),
            default_admission_timeout_seconds=float(
                data.get(
                    "default_admission_timeout_seconds", defaults.default_admission_timeout_seconds
                )
            ),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
