"""Load the cluster's connection settings with kubernetes-asyncio, in a short-lived child process.

``python -m mutator.resolve.kube.loader [--kubeconfig PATH] [--context NAME] [--in-cluster]``
prints one JSON object: the API server's URL, its CA, the client certificate and
key (as PEM text, not paths: kubernetes-asyncio's temporary files go with this
process), the bearer token and, in a cluster, the token file to re-read as the
kubelet rotates it. Exit 2 with one line on stderr when the configuration is unusable.

kubernetes-asyncio stays what reads kubeconfigs and the in-cluster service
account, with everything those can hold (exec plugins, OIDC, embedded or
referenced certificates); but importing any part of it imports its generated
client (every API type, about 40 MB of RSS), which the server has no use for:
it speaks to the API server through :mod:`mutator.resolve.kube.client` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

EXIT_UNUSABLE = 2


def _pem(path: Any) -> str | None:
    return Path(path).read_text() if path else None


async def load(*, kubeconfig: str | None, context: str | None, in_cluster: bool) -> dict[str, Any]:
    from kubernetes_asyncio import client, config
    from kubernetes_asyncio.config import incluster_config

    configuration = client.Configuration()
    token_file = None
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
        token_file = incluster_config.SERVICE_TOKEN_FILENAME
        name = "in-cluster"
    else:
        await config.load_kube_config(config_file=kubeconfig, context=context,
                                      client_configuration=configuration)
        if context is None:
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            context = (active or {}).get("name", "")
        name = context or ""
    token = await configuration.get_api_key_with_prefix("BearerToken")
    return {"host": configuration.host, "context": name, "ca": _pem(configuration.ssl_ca_cert),
            "cert": _pem(configuration.cert_file), "key": _pem(configuration.key_file),
            "verify": bool(configuration.verify_ssl), "tls_server_name": configuration.tls_server_name,
            "proxy": configuration.proxy, "token": token or None, "token_file": token_file}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--in-cluster", action="store_true")
    args = parser.parse_args(argv)
    import yaml
    from kubernetes_asyncio.config import ConfigException

    try:
        settings = asyncio.run(load(kubeconfig=args.kubeconfig, context=args.context,
                                    in_cluster=args.in_cluster))
    except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        print(" ".join(str(exc).split()) or type(exc).__name__, file=sys.stderr)
        return EXIT_UNUSABLE
    sys.stdout.write(json.dumps(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
