"""Where a lookup's registry credentials come from: the first source that has some wins.

The node pulls with, in order, the Pod's own pull secrets (and its
ServiceAccount's), then what its kubelet credential provider plugins print,
then its static Docker config; with none of those, anonymously. We follow the
same order so we read the image the node will pull with the access it will have:

1. a :class:`PodKeyrings` hook turns a Pod's :class:`PullContext` into a keyring
   (implemented from Kubernetes Secrets elsewhere);
2. :class:`~mutator.resolve.registry.authn.plugins.PluginCredentials`;
3. a Docker ``config.json`` file (``docker_config``, ``--docker-config``);
4. nothing: anonymous.

"Has some" means "has credentials matching this image": a pull secret for
another registry does not hide the node's plugin for this one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Protocol

from mutator.errors import ConfigError
from mutator.resolve.registry.authn.keyring import Credential, Keyring
from mutator.resolve.registry.authn.plugins import PluginCredentials
from mutator.resolve.registry.reference import Reference

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PullContext:
    """What decides a Pod's pull credentials: its namespace, pull secrets and ServiceAccount."""

    namespace: str
    pull_secrets: tuple[str, ...] = ()
    service_account: str = "default"


class PodKeyrings(Protocol):
    async def keyring(self, pod: PullContext) -> Keyring | None:
        """The keyring of *pod*'s pull secrets; None (or empty) when it has none readable."""
        ...


def load_docker_config(path: str) -> Keyring:
    """A Docker ``config.json`` (or legacy ``.dockercfg``) file as a keyring; unreadable is a ConfigError."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read docker config {path}: {exc.strerror}") from None
    return parse_docker_config(raw, path=path)


def parse_docker_config(raw: bytes, *, path: str) -> Keyring:
    """The bytes of the Docker config at *path* as a keyring; not JSON is a ConfigError.

    Apart from :func:`load_docker_config` so that a reload parses exactly the bytes it read once.
    """
    try:
        data = json.loads(raw)
    except ValueError:  # also bytes that are not UTF-8
        raise ConfigError(f"docker config {path} is not JSON") from None
    # A file that is JSON but not a Docker config is as much an error as one that is not JSON
    if not isinstance(data, dict):
        raise ConfigError(f"docker config {path} is not a JSON object")
    if not isinstance(data.get("auths", {}), dict):
        raise ConfigError(f"docker config {path}: 'auths' is not an object")
    for helper_key in ("credsStore", "credHelpers"):
        if data.get(helper_key):
            log.warning("docker config %s: %s is not used; only credentials stored in the file are",
                        path, helper_key)
    return Keyring.from_docker_config(data, source=f"docker-config {path}")


class CredentialSources:
    """The chain of credential sources; :meth:`credentials` answers for one image and one Pod."""

    def __init__(self, *, pods: PodKeyrings | None = None, plugins: PluginCredentials | None = None,
                 docker_config: Keyring | None = None) -> None:
        self._pods = pods
        self._plugins = plugins
        self._docker_config = docker_config or Keyring()

    @classmethod
    def from_files(cls, *, provider_config: str | None, provider_bin_dir: str | None,
                   docker_config: str | None, pods: PodKeyrings | None = None) -> CredentialSources:
        """The node-wide sources these files name, read now so that a broken one fails here.

        *provider_config* and *provider_bin_dir* are the kubelet's CredentialProviderConfig and
        the directory its plugins are found in (both or neither); *docker_config* is a Docker
        config.json with node-wide credentials. Paths, not settings: the registry code reads
        no application config.
        """
        plugins = None
        if provider_config and provider_bin_dir:
            plugins = PluginCredentials.from_files(provider_config, provider_bin_dir)
        return cls(pods=pods, plugins=plugins,
                   docker_config=load_docker_config(docker_config) if docker_config else None)

    def use_docker_config(self, keyring: Keyring) -> None:
        """Answer from *keyring* instead of the Docker config read so far: the file was rotated.

        One attribute swap: a lookup already holding its credentials goes on with them, the
        next one asks again. Nothing else needs to forget the old keyring: tokens are cached
        and access proved per credential fingerprint, so new credentials start afresh.
        """
        self._docker_config = keyring

    def with_pods(self, pods: PodKeyrings | None) -> CredentialSources:
        """These sources with *pods* first: for a command that reads the cluster only after its
        node-wide sources (plugins, Docker config) were loaded and checked (``mutator report``)."""
        return CredentialSources(pods=pods, plugins=self._plugins, docker_config=self._docker_config)

    async def credentials(self, ref: Reference, *, pull: PullContext | None = None) -> tuple[Credential, ...]:
        """Candidates for reading *ref*, best first, from the first source that has any; () is anonymous."""
        found: list[Credential] = []
        if pull is not None and self._pods is not None:
            try:
                keyring = await self._pods.keyring(pull)
            except Exception as exc:  # the Pod's secrets unreadable: the node's sources still apply
                log.warning("pull secrets of %s in %s could not be read: %s", pull.service_account,
                            pull.namespace, exc)
                keyring = None
            found = keyring.lookup(ref.name) if keyring else []
        if not found and self._plugins is not None:
            found = (await self._plugins.keyring(ref)).lookup(ref.name)
        if not found:
            found = self._docker_config.lookup(ref.name)
        log.debug("credentials for %s: %s", ref, ", ".join(map(str, found)) or "none, anonymous")
        return tuple(found)
