"""What each registry auth path costs: round trips and milliseconds for one manifest GET.

    .venv/bin/python -m benchmarks.bench_auth [--rounds N]

Everything runs on loopback over TLS from a test CA: docker-registry without
auth (the baseline), with htpasswd Basic, and with token auth backed by the
tests' token server; a credential provider plugin script for the plugin path.

"cold" is a fresh client: no challenge, token or plugin answer cached, and new
TLS connections (the baseline's cold figure is that handshake). "warm" is the
same client's next request; "new repository" its first request for another
repository of a registry whose challenge it knows. Round trips count every HTTP
request made, tokens and pings included; a plugin's exec is in the time only.
The token server is the tests' own (Python, a TLS handshake per token).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from mutator.config import Config, from_mapping
from mutator.resolve.registry import reference
from mutator.resolve.registry.authn.credentials import CredentialSources
from mutator.resolve.registry.authn.keyring import Credential
from mutator.resolve.registry.authn.plugins import PluginCredentials, load_providers
from mutator.resolve.registry.client import RegistryClient
from tests.registry_auth.test_plugins import Plugin
from tests.support.auth import TestCA, TokenPolicy, TokenServer, basic, htpasswd
from tests.support.images import Pusher, layer, passwd
from tests.support.registry import RegistryServer

PASSWORD = "bench-password"


def _push(server: RegistryServer, ca: TestCA, repository: str, authorization: str | None = None) -> str:
    pusher = Pusher(server.url, context=ca.client_context(), authorization=authorization)
    return pusher.image(repository, "v1", user="app",
                        layers=[layer({"etc/passwd": passwd(("app", 1000, 1000))})]).reference


async def measure(name: str, session: aiohttp.ClientSession, count: list[int], config: Config, image: str,
                  credentials: Callable[[], object], rounds: int, *, then: str | None = None) -> None:
    """Cold, then warm; with *then*, a third request for another repository of the same registry
    (its challenge known, its token not yet fetched)."""
    refs = [reference.parse(image), reference.parse(image)] + ([reference.parse(then)] if then else [])
    ms: list[list[float]] = [[] for _ in refs]
    trips: list[list[int]] = [[] for _ in refs]
    for _ in range(rounds):
        client = RegistryClient(session=session, registries=config.registry)
        lookup = credentials()  # a fresh source (e.g. a plugin with an empty cache) per cold client
        for i, ref in enumerate(refs):
            before, started = count[0], time.perf_counter()
            creds = await lookup.credentials(ref) if isinstance(lookup, CredentialSources) else lookup
            await client.with_credentials(creds).manifest(ref, ref.identifier)  # type: ignore[arg-type]
            ms[i].append((time.perf_counter() - started) * 1000)
            trips[i].append(count[0] - before)
    columns = ["cold", "warm", "new repository"]
    print(f"  {name:<20}" + "".join(
        f"   {columns[i]} {statistics.median(trips[i]):2.0f} RT {statistics.median(ms[i]):6.1f} ms"
        for i in range(len(refs))))


async def run(rounds: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    ca = TestCA(directory)
    tokens = TokenServer(ca, TokenPolicy(users={"alice": PASSWORD}, public={"public/app"},
                                         grants={("alice", "private/app"): {"pull"}})).start()
    servers = []
    try:
        plain = RegistryServer(tls_cert=ca.server_cert("plain")[0], tls_key=str(directory / "plain.key"),
                               ca_file=ca.cert_file).start()
        cert, key = ca.server_cert("token")
        token = RegistryServer(tls_cert=cert, tls_key=key, ca_file=ca.cert_file,
                               auth=tokens.registry_auth()).start()
        cert, key = ca.server_cert("basic")
        users = htpasswd(directory / "htpasswd", {"alice": PASSWORD})
        basic_server = RegistryServer(tls_cert=cert, tls_key=key, ca_file=ca.cert_file,
                                      auth={"htpasswd": {"realm": "bench", "path": users}}).start()
        servers = [plain, token, basic_server]
        push_token = tokens.mint("alice", [{"type": "repository", "name": n, "actions": ["pull", "push"]}
                                           for n in ("public/app", "private/app")])
        images = {
            "plain": _push(plain, ca, "public/app"),
            "public": _push(token, ca, "public/app", f"Bearer {push_token}"),
            "private": _push(token, ca, "private/app", f"Bearer {push_token}"),
            "basic": _push(basic_server, ca, "private/app", basic("alice", PASSWORD)),
        }
        config = from_mapping({"registries": {s.host: {"ca_file": ca.cert_file} for s in servers}})
        plugin_dir = directory / "plugin"
        plugin_dir.mkdir()
        plugin = Plugin(plugin_dir, basic_server.host)
        plugin.configure(user="alice", password=PASSWORD)
        alice = (Credential(username="alice", password=PASSWORD, source="bench"),)

        def plugins() -> CredentialSources:
            providers = load_providers(str(plugin.config), str(plugin.bin_dir))
            return CredentialSources(plugins=PluginCredentials(providers))

        count = [0]
        trace = aiohttp.TraceConfig()

        async def on_end(*_args: object) -> None:
            count[0] += 1

        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_end)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            print(f"one manifest GET over TLS on loopback, medians of {rounds} rounds:")
            await measure("no auth (baseline)", session, count, config, images["plain"], lambda: (), rounds)
            await measure("anonymous token", session, count, config, images["public"], lambda: (), rounds)
            await measure("basic -> token", session, count, config, images["private"], lambda: alice, rounds,
                          then=images["public"])
            await measure("basic (htpasswd)", session, count, config, images["basic"], lambda: alice, rounds)
            await measure("plugin -> basic", session, count, config, images["basic"], plugins, rounds)
    finally:
        for server in servers:
            server.stop()
        tokens.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
