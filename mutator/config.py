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
    registries: dict[str, RegistryConfig] = {}
    for host, settings in (data.get("registries") or {}).items():
        settings = settings or {}
        if not isinstance(settings, dict) or set(settings) - {"plain_http", "ca_file"}:
            raise ConfigError(f"{source}: registries.{host} takes plain_http and ca_file only")
        ca_file = settings.get("ca_file")
        if ca_file is not None and not os.path.isfile(ca_file):
            raise ConfigError(f"{source}: registries.{host}.ca_file {ca_file} does not exist")
        registries[str(host)] = RegistryConfig(bool(settings.get("plain_http", False)), ca_file)
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
