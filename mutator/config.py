"""The configuration file (YAML; path from ``--config`` or ``MUTATOR_CONFIG``).

Every setting has a default that works for public registries, so a file is only
needed for private ones (plain HTTP, a custom CA, credentials) or to tune the cache.

Every value is checked at start, by type and range, and an error names the key:
a quoted ``plain_http: "false"`` or a ``lookup_timeout_seconds: 0`` must stop the
server with a clear message, not quietly change what it does. The checks live
next to the fields they guard (``field(metadata=check(...))``), so a new key is
one line: its name, its default and its check.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from mutator.errors import ConfigError

ENV_VAR = "MUTATOR_CONFIG"

Check = Callable[[str, Any], Any]  # (key for errors, raw value) -> checked value; raises ConfigError


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def boolean() -> Check:
    def check(key: str, value: Any) -> bool:
        if not isinstance(value, bool):  # "false" and 0 are not booleans: YAML says true/false
            raise ConfigError(f"{key} must be true or false, got {_kind(value)}")
        return value
    return check


def number(*, above: float | None = None, at_least: float | None = None,
           at_most: float | None = None, integer: bool = False) -> Check:
    """A number (an int when *integer*) in a range; bools are not numbers here."""
    def check(key: str, value: Any) -> float | int:
        allowed = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, got {_kind(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        if above is not None and not value > above:
            raise ConfigError(f"{key} must be greater than {above:g}, got {value!r}")
        if at_least is not None and value < at_least:
            raise ConfigError(f"{key} must be at least {at_least:g}, got {value!r}")
        if at_most is not None and value > at_most:
            raise ConfigError(f"{key} must be at most {at_most:g}, got {value!r}")
        return value if integer else float(value)
    return check


def path(*, directory: bool = False) -> Check:
    """An existing file (or directory); None leaves the setting off."""
    def check(key: str, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a path, got {_kind(value)}")
        exists = os.path.isdir(value) if directory else os.path.isfile(value)
        if not exists:
            raise ConfigError(f"{key}: {'directory' if directory else 'file'} {value} does not exist")
        return value
    return check


def pem_ca(key: str, value: Any) -> str | None:
    """An existing file of PEM CA certificates: one that is not is an error now, not at each lookup."""
    value = path()(key, value)
    if value is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=value)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise ConfigError(f"{key}: {value} is not a PEM CA certificate file ({_ssl_reason(exc)})"
                              ) from None
    return value


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def _is_host(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "/" not in value and not any(c.isspace() for c in value)


def hosts() -> Check:
    """A list of ``HOST[:PORT]``."""
    def check(key: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(_is_host(h) for h in value):
            raise ConfigError(f"{key} must be a list of HOST[:PORT], got {_kind(value)}")
        return tuple(value)
    return check


def check(validate: Check) -> dict[str, Check]:
    """Field metadata naming the check of one setting."""
    return {"check": validate}


def _from_fields(cls: type[Any], data: Any, *, prefix: str) -> Any:
    """Build dataclass *cls* from mapping *data*, running each field's check; unknown keys are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the top level'} must be a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown keys {[prefix + k for k in unknown]}; known: {sorted(fields)}")
    values = {name: fields[name].metadata["check"](prefix + name, value) for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as exc:  # a rule between fields (__post_init__)
        raise ConfigError(f"{prefix.rstrip('.')}: {exc}" if prefix else str(exc)) from None


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"platform must be OS/ARCH[/VARIANT], got {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _platform(key: str, value: Any) -> Platform:
    try:
        return Platform.parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """How to reach one registry host (``HOST[:PORT]``, as it appears in image names)."""

    plain_http: bool = field(default=False, metadata=check(boolean()))
    ca_file: str | None = field(default=None, metadata=check(pem_ca))
    # Client certificate for registries that demand mutual TLS (both or neither).
    cert_file: str | None = field(default=None, metadata=check(path()))
    key_file: str | None = field(default=None, metadata=check(path()))
    # Trust any certificate: for a lab registry only, and loudly warned about.
    insecure_skip_verify: bool = field(default=False, metadata=check(boolean()))
    # Hosts tried in order before this registry, as containerd's hosts.toml mirrors are.
    mirrors: tuple[str, ...] = field(default=(), metadata=check(hosts()))

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("cert_file and key_file go together")
        if self.cert_file is not None and self.key_file is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(self.cert_file, self.key_file)
            except (ssl.SSLError, ValueError, OSError) as exc:
                raise ConfigError(f"cert_file {self.cert_file} with key_file {self.key_file} do not load "
                                  f"as a PEM certificate and its key ({_ssl_reason(exc)})") from None


def _registries(key: str, value: Any) -> dict[str, RegistryConfig]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping of HOST[:PORT] to settings, got {_kind(value)}")
    registries = {}
    for host, settings in value.items():
        if not _is_host(host):
            raise ConfigError(f"{key}: {host!r} is not a HOST[:PORT]")
        registries[host] = _from_fields(RegistryConfig, settings, prefix=f"{key}.{host}.")
    return registries


@dataclass(frozen=True, slots=True)
class Config:
    platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"),
                               metadata=check(_platform))
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict, metadata=check(_registries))
    # How long a resolved tag is trusted; a digest-pinned image never changes.
    cache_ttl_seconds: float = field(default=300.0, metadata=check(number(at_least=0)))
    cache_max_entries: int = field(default=10_000, metadata=check(number(at_least=1, integer=True)))
    # Upper bound of one registry lookup, shared by every admission waiting on it.
    lookup_timeout_seconds: float = field(default=30.0, metadata=check(number(above=0, at_most=3600)))
    # Used when the API server sends no ?timeout (its own default is 10 s; it allows at most 30 s).
    default_admission_timeout_seconds: float = field(
        default=10.0, metadata=check(number(above=0, at_most=30)))
    # Registry credentials: a Docker config.json, and the nodes' kubelet credential provider plugins.
    docker_config: str | None = field(default=None, metadata=check(path()))
    # How often serve looks for a rotated docker_config (a Secret volume updated in place).
    docker_config_reload_seconds: float = field(default=5.0, metadata=check(number(above=0, at_most=3600)))
    credential_provider_config: str | None = field(default=None, metadata=check(path()))
    credential_provider_bin_dir: str | None = field(default=None, metadata=check(path(directory=True)))
    # At start, resolve the images of Pods in opted-in namespaces (in the background).
    warmup: bool = field(default=True, metadata=check(boolean()))
    warmup_concurrency: int = field(default=4, metadata=check(number(at_least=1, at_most=64, integer=True)))
    # The Pods' own pull secrets, read from the cluster (in-cluster, or `kubeconfig`/$KUBECONFIG).
    # Off for clusters that will not grant the webhook `get/list/watch` on Secrets.
    pull_secrets: bool = field(default=True, metadata=check(boolean()))
    kubeconfig: str | None = field(default=None, metadata=check(path()))
    # How long "may these credentials read this repository?" (a manifest HEAD) is trusted.
    access_check_ttl_seconds: float = field(default=60.0, metadata=check(number(above=0, at_most=3600)))

    def __post_init__(self) -> None:
        if (self.credential_provider_config is None) != (self.credential_provider_bin_dir is None):
            raise ConfigError("credential_provider_config and credential_provider_bin_dir go together")
    # Compressed and decoded layer bytes one lookup may read (each): bounds decompression bombs.
    max_scan_bytes: int = field(default=2 * 1024 * 1024 * 1024,
                                metadata=check(number(at_least=1, integer=True)))
    # Memory held by the layer digest → account-file facts cache shared by all images.
    layer_cache_max_bytes: int = field(default=64 * 1024 * 1024,
                                       metadata=check(number(at_least=1, integer=True)))

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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return from_mapping(data, source=path)


def from_mapping(data: Any, *, source: str = "config") -> Config:
    """Check every key of *data* and build the Config; a ConfigError names *source* and the key."""
    try:
        config: Config = _from_fields(Config, data, prefix="")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config
