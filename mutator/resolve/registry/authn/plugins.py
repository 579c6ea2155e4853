"""Kubelet image credential provider plugins (exec API ``credentialprovider.kubelet.k8s.io/v1``).

EKS, GKE and AKS nodes pull from their clouds' registries with no Secret at all:
the kubelet runs a plugin named in a ``CredentialProviderConfig`` that prints
short-lived credentials. Reading the same file and running the same plugins the
same way lets the webhook read every image those nodes can pull:

* a provider applies when one of its ``matchImages`` matches the image (the
  keyring's host rules); every matching provider runs, earlier ones first;
* the plugin gets a ``CredentialProviderRequest`` on stdin, its ``args`` and the
  environment plus its ``env``; it must answer within :data:`PLUGIN_TIMEOUT`;
* the answer is cached per image, registry or globally (``cacheKeyType``) for
  ``cacheDuration`` (else the provider's ``defaultCacheDuration``); concurrent
  requests for one cache key run the plugin once.

A failing plugin is logged and counts as "no credentials from here"; the next
source is tried, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from cachetools import TLRUCache

from mutator import durations
from mutator.errors import ConfigError, CredentialProviderError
from mutator.resolve.registry.authn.keyring import Credential, Keyring, matches, parse_key
from mutator.resolve.registry.reference import Reference

log = logging.getLogger(__name__)

CONFIG_API_VERSIONS = frozenset({"kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1"})
PLUGIN_API_VERSION = "credentialprovider.kubelet.k8s.io/v1"
PLUGIN_API_VERSIONS = frozenset({PLUGIN_API_VERSION, "credentialprovider.kubelet.k8s.io/v1beta1"})
PLUGIN_TIMEOUT = 10.0  # seconds; a lookup is bounded as a whole anyway, this bounds one exec
MAX_OUTPUT_BYTES = 1024 * 1024


def parse_duration(text: Any) -> float:
    """A Go ``time.Duration`` string (``"1h30m"``, ``"90s"``, ``"0"``) in seconds."""
    return durations.parse(text)


@dataclass(frozen=True, slots=True)
class Provider:
    """One ``providers[]`` entry of a CredentialProviderConfig."""

    name: str
    executable: str
    match_images: tuple[str, ...]
    default_cache_seconds: float
    api_version: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None

    def applies_to(self, image: str) -> bool:
        return any(matches(pattern, image) for pattern in self.match_images)


def _provider(entry: Any, *, bin_dir: str, where: str) -> Provider:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"{where}.name must be a plain file name in the bin dir, got {name!r}")
    where = f"{where} ({name})"
    images = entry.get("matchImages")
    if not isinstance(images, list) or not images or not all(
        isinstance(i, str) and parse_key(i) for i in images
    ):
        raise ConfigError(f"{where}.matchImages must be a non-empty list of image patterns")
    try:
        default_cache = parse_duration(entry.get("defaultCacheDuration"))
    except ValueError as exc:
        raise ConfigError(f"{where}.defaultCacheDuration: {exc}") from None
    api_version = entry.get("apiVersion")
    if api_version not in PLUGIN_API_VERSIONS:
        raise ConfigError(f"{where}.apiVersion must be one of {sorted(PLUGIN_API_VERSIONS)}, "
                          f"got {api_version!r}")
    args = entry.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}.args must be a list of strings")
    env: dict[str, str] = {}
    for item in entry.get("env") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("value"), str):
            raise ConfigError(f"{where}.env entries need a string name and value")
        env[item["name"]] = item["value"]
    executable = os.path.join(bin_dir, name)
    if not os.access(executable, os.X_OK) or not os.path.isfile(executable):
        raise ConfigError(f"{where}: {executable} is not an executable file")
    return Provider(name, executable, tuple(images), default_cache, api_version, tuple(args), env)


def load_providers(config_path: str, bin_dir: str) -> tuple[Provider, ...]:
    """Read a CredentialProviderConfig file as the kubelet does; any mistake is a ConfigError."""
    try:
        with open(config_path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read credential provider config {config_path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"credential provider config {config_path} is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or document.get("kind") != "CredentialProviderConfig" \
            or document.get("apiVersion") not in CONFIG_API_VERSIONS:
        raise ConfigError(f"{config_path} is not a CredentialProviderConfig "
                          f"({' or '.join(sorted(CONFIG_API_VERSIONS))})")
    entries = document.get("providers")
    if not isinstance(entries, list):
        raise ConfigError(f"{config_path}: providers must be a list")
    providers = tuple(_provider(entry, bin_dir=bin_dir, where=f"{config_path}: providers[{i}]")
                      for i, entry in enumerate(entries))
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{config_path}: provider names must be unique")
    return providers


@dataclass(frozen=True, slots=True)
class _Answer:
    keyring: Keyring
    expires_at: float


class PluginCredentials:
    """Runs the matching plugins for an image and caches their answers as the kubelet does."""

    def __init__(self, providers: Sequence[Provider], *, clock: Callable[[], float] = time.monotonic,
                 timeout: float = PLUGIN_TIMEOUT, max_entries: int = 4096) -> None:
        self._providers = tuple(providers)
        self._clock = clock
        self._timeout = timeout
        self._cache: TLRUCache[tuple[str, str], _Answer] = TLRUCache(
            maxsize=max_entries, ttu=lambda _key, answer, _now: answer.expires_at, timer=clock
        )
        self._running: dict[tuple[str, str], asyncio.Future[Keyring]] = {}

    @classmethod
    def from_files(cls, config_path: str, bin_dir: str) -> PluginCredentials:
        return cls(load_providers(config_path, bin_dir))

    async def keyring(self, ref: Reference) -> Keyring:
        """What every provider matching *ref* offers, earlier providers first."""
        keyrings = [await self._provide(provider, ref) for provider in self._providers
                    if provider.applies_to(ref.name)]
        return Keyring.merge(*keyrings)

    async def _provide(self, provider: Provider, ref: Reference) -> Keyring:
        image = str(ref)
        # The kubelet keys its cache by image, registry or nothing, as the plugin said last time.
        for scope in (image, ref.registry, ""):
            cached = self._cache.get((provider.name, scope))
            if cached is not None:
                return cached.keyring
        key = (provider.name, image)
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(self._run(provider, ref))
            running.add_done_callback(lambda done, key=key: self._finished(key, done))
        try:
            return await asyncio.shield(running)
        except CredentialProviderError as exc:
            log.warning("credential provider %s gave nothing for %s: %s", provider.name, image, exc)
            return Keyring()

    def _finished(self, key: tuple[str, str], done: asyncio.Future[Keyring]) -> None:
        self._running.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved, so a run whose callers all left is not reported as lost

    async def _run(self, provider: Provider, ref: Reference) -> Keyring:
        image = str(ref)
        request = {"apiVersion": provider.api_version, "kind": "CredentialProviderRequest", "image": image}
        started = time.perf_counter()
        try:
            process = await asyncio.create_subprocess_exec(
                provider.executable, *provider.args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env={**os.environ, **(provider.env or {})},
            )
        except OSError as exc:
            raise CredentialProviderError(f"cannot run {provider.executable}: {exc.strerror}") from None
        try:
            async with asyncio.timeout(self._timeout):
                stdout, stderr = await process.communicate(json.dumps(request).encode())
        except TimeoutError:
            process.kill()
            await process.wait()
            raise CredentialProviderError(f"no answer within {self._timeout:g} s") from None
        finally:
            if process.returncode is None:  # cancelled: never leave the plugin running
                process.kill()
        if process.returncode != 0:
            # stderr is the plugin's own message; it is shown trimmed, and plugins do not print secrets there
            detail = stderr.decode(errors="replace").strip()[-300:]
            raise CredentialProviderError(f"exited with status {process.returncode}: {detail}")
        answer = _parse_response(stdout, provider=provider)
        source = f"plugin {provider.name}"
        keyring = Keyring([(key, Credential(username=user, password=password, source=source))
                           for key, user, password in answer.auth])
        log.debug("credential provider %s answered for %s in %.0f ms: %d entries, cache %s for %g s",
                  provider.name, image, (time.perf_counter() - started) * 1000, len(keyring),
                  answer.cache_key_type, answer.cache_seconds)
        if answer.cache_seconds > 0:
            scope = {"Image": image, "Registry": ref.registry, "Global": ""}[answer.cache_key_type]
            self._cache[(provider.name, scope)] = _Answer(keyring, self._clock() + answer.cache_seconds)
        return keyring


@dataclass(frozen=True, slots=True)
class PluginResponse:
    cache_key_type: str
    cache_seconds: float
    auth: tuple[tuple[str, str, str], ...]  # (match key, username, password)

    def __repr__(self) -> str:
        return f"PluginResponse({self.cache_key_type}, {self.cache_seconds:g} s, {len(self.auth)} keys)"


def _parse_response(raw: bytes, *, provider: Provider) -> PluginResponse:
    """Check a CredentialProviderResponse; errors never quote the output (it carries secrets)."""
    if len(raw) > MAX_OUTPUT_BYTES:
        raise CredentialProviderError("answer is over the size limit")
    try:
        document = json.loads(raw)
    except ValueError:
        raise CredentialProviderError("answer is not JSON") from None
    if not isinstance(document, dict) or document.get("kind") != "CredentialProviderResponse":
        raise CredentialProviderError("answer is not a CredentialProviderResponse")
    if document.get("apiVersion") != provider.api_version:
        raise CredentialProviderError(f"answer has apiVersion {document.get('apiVersion')!r}, "
                                      f"not the {provider.api_version} it was asked in")
    key_type = document.get("cacheKeyType")
    if key_type not in ("Image", "Registry", "Global"):
        raise CredentialProviderError(f"cacheKeyType must be Image, Registry or Global, got {key_type!r}")
    duration = document.get("cacheDuration")
    try:
        seconds = provider.default_cache_seconds if duration in (None, "") else parse_duration(duration)
    except ValueError:
        raise CredentialProviderError(f"cacheDuration {duration!r} is not a duration") from None
    auth = document.get("auth") or {}
    if not isinstance(auth, dict):
        raise CredentialProviderError("auth is not an object")
    entries = []
    for key, value in auth.items():
        if not isinstance(value, dict) or not isinstance(value.get("username", ""), str) \
                or not isinstance(value.get("password", ""), str) or parse_key(str(key)) is None:
            log.warning("credential provider %s: ignoring the malformed entry for %r", provider.name, key)
            continue
        entries.append((str(key), value.get("username", ""), value.get("password", "")))
    return PluginResponse(key_type, seconds, tuple(entries))
