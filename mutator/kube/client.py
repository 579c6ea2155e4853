"""An API-server client from the in-cluster service account or from a kubeconfig.

Only explicit sources are used (``--kubeconfig``, ``$KUBECONFIG``, the
``kubeconfig`` config key, or the in-cluster service account): a developer's
``~/.kube/config`` is never picked up by surprise, so ``mutator serve --dev`` on a
laptop does not start reading Secrets from whatever cluster is current.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import yaml

from mutator.errors import ConfigError

if TYPE_CHECKING:
    from kubernetes_asyncio import client

log = logging.getLogger(__name__)

SERVICE_HOST_ENV = "KUBERNETES_SERVICE_HOST"


def kubeconfig_path(explicit: str | None) -> str | None:
    """The kubeconfig to use: the explicit one (flag or config key), else ``$KUBECONFIG``."""
    path = explicit or os.environ.get("KUBECONFIG") or None
    # $KUBECONFIG may list several files; the first is the one kubectl writes to
    return path.split(os.pathsep)[0] if path else None


def in_cluster() -> bool:
    return bool(os.environ.get(SERVICE_HOST_ENV))


async def api_client(*, kubeconfig: str | None) -> client.ApiClient | None:
    """A client for the cluster, or ``None`` when there is no cluster to talk to.

    Raises :class:`ConfigError` when a kubeconfig is named but unusable: an
    operator who pointed at one expects it to be used.
    """
    path = kubeconfig_path(kubeconfig)
    if not path and not in_cluster():
        return None
    # Imported here, not at the top: the generated client holds every API type (about 38 MB of
    # RSS), which a replica that reads no cluster (``serve --dev``, ``review``) has no use for.
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.config import ConfigException

    configuration = client.Configuration()
    if path:
        try:
            await config.load_kube_config(config_file=path, client_configuration=configuration)
        except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
            raise ConfigError(f"kubeconfig {path} is unusable: {' '.join(str(exc).split())}") from None
        log.info("reading pull secrets from %s (kubeconfig %s)", configuration.host, path)
    elif in_cluster():
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"in-cluster service account is unusable: {exc}") from None
        log.info("reading pull secrets from %s (in-cluster service account)", configuration.host)
    else:
        return None
    return client.ApiClient(configuration)
