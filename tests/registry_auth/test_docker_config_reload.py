"""A rotated ``docker_config`` Secret is used by a running ``mutator serve``, without a restart.

The file is swapped the way the kubelet updates a Secret volume: the new content is
written into a fresh directory, then the volume's ``..data`` symlink is renamed onto it
(``config.json`` is a symlink through ``..data``). The registry is the loopback
docker-registry with htpasswd Basic auth; the server is a real process.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import urllib3
from prometheus_client import REGISTRY

from mutator.decide import admission
from mutator.decide.images import ImageFailure, ImageUser
from mutator.resolve.registry.authn.credentials import CredentialSources, PullContext
from mutator.resolve.registry.reference import parse
from mutator.serve.dockerreload import DockerConfigReloader
from tests.registry_auth.conftest import ALICE_PASSWORD, BOB_PASSWORD, PUSHER_PASSWORD
from tests.support.auth import basic
from tests.support.images import Pusher, layer, passwd
from tests.support.net import wait_for
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.registry

WRONG_PASSWORD = "alice-old-pw-0e6d2c4a"
RELOADED = 'nonroot_mutator_docker_config_reloads_total{result="loaded"}'


class SecretVolume:
    """A directory laid out as the kubelet lays out a Secret volume, and updated as it updates one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "config.json"
        self._generation = 0

    def publish(self, document: dict[str, Any]) -> None:
        """New timestamped directory, a temporary ``..data_tmp`` link to it, renamed over ``..data``."""
        self._generation += 1
        directory = self.root / f"..2026_11_23_13_00_0{self._generation}.000000001"
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(document))
        staging = self.root / "..data_tmp"
        staging.symlink_to(directory.name)
        os.replace(staging, self.root / "..data")  # the atomic swap
        if not self.path.is_symlink():
            self.path.symlink_to("..data/config.json")


def auths(host: str, password: str, user: str = "alice") -> dict[str, Any]:
    return {"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}


def admit(http: urllib3.PoolManager, webhook: WebhookProcess, image: str) -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"},
           "spec": {"containers": [{"name": "app", "image": image}]}}
    reply = http.request("POST", f"{webhook.url}/mutate/enforce?timeout=10s",
                         body=json.dumps(admission.review_for_pod(pod)).encode(),
                         headers={"Content-Type": "application/json"})
    assert reply.status == 200, reply.data
    response: dict[str, Any] = json.loads(reply.data)["response"]
    return response


def patched_uid(response: dict[str, Any]) -> int | None:
    """The runAsUser the patch sets, or None when the Pod was refused or left alone."""
    if not response["allowed"] or "patch" not in response:
        return None
    for operation in json.loads(base64.b64decode(response["patch"])):
        value = operation.get("value")
        if isinstance(value, dict) and "runAsUser" in value:
            return int(value["runAsUser"])
        if operation["path"].endswith("/runAsUser"):
            return int(value)
    return None


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    root = tmp_path / "docker"
    root.mkdir()
    return SecretVolume(root)


def test_serve_uses_rotated_credentials_and_gates_cached_images_by_them(tmp_path, ca, basic_registry, volume):
    host = basic_registry.server.host
    pusher = Pusher(basic_registry.server.url, context=ca.client_context(),
                    authorization=basic("pusher", PUSHER_PASSWORD))
    later = pusher.image("private/later", "v1", user="app",
                         layers=[layer({"etc/passwd": passwd(("app", 1303, 1303))})]).reference
    volume.publish(auths(host, WRONG_PASSWORD))
    config = tmp_path / "mutator.yaml"
    config.write_text(json.dumps({
        "registries": {host: {"ca_file": ca.cert_file}}, "docker_config": str(volume.path),
        "docker_config_reload_seconds": 0.1, "pull_secrets": False, "warmup": False,
    }))
    webhook = WebhookProcess(config=str(config)).start()
    try:
        http = webhook.https()
        refused = admit(http, webhook, basic_registry.private)
        assert refused["allowed"] is False, refused
        assert "401" in refused["status"]["message"], refused
        assert webhook.metric(RELOADED) == 0

        volume.publish(auths(host, ALICE_PASSWORD))
        wait_for(lambda: webhook.metric(RELOADED) >= 1, timeout=15, what="the docker config reload")
        assert patched_uid(admit(http, webhook, basic_registry.private)) == 1302  # refusals are not kept
        assert patched_uid(admit(http, webhook, later)) == 1303  # a cold private image

        # Revoked again: the cached answer is not handed out on the strength of the old credentials.
        volume.publish(auths(host, WRONG_PASSWORD))
        wait_for(lambda: webhook.metric(RELOADED) >= 2, timeout=15, what="the second reload")
        cached = admit(http, webhook, basic_registry.private)
        assert cached["allowed"] is False and "401" in cached["status"]["message"], cached
    finally:
        assert webhook.stop() == 0
    log = webhook.log.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    reloaded = [line for line in lines if line["msg"].startswith("docker config reloaded")]
    assert [line["level"] for line in reloaded] == ["info", "info"], log
    for secret in (ALICE_PASSWORD, WRONG_PASSWORD, auths(host, ALICE_PASSWORD)["auths"][host]["auth"]):
        assert secret not in log


def credential_password(sources: CredentialSources, image: str) -> str:
    (credential,) = asyncio.run(sources.credentials(parse(image)))
    return credential.password


def sample(result: str) -> float:
    return REGISTRY.get_sample_value("nonroot_mutator_docker_config_reloads_total", {"result": result}) or 0.0


def test_a_file_that_does_not_load_or_disappears_keeps_the_previous_keyring(volume, caplog):
    image = "registry.example:5000/private/app:v1"
    volume.publish(auths("registry.example:5000", "first-pw"))
    sources = CredentialSources()
    reloader = DockerConfigReloader(sources, str(volume.path))
    assert credential_password(sources, image) == "first-pw" and reloader.check() is False
    loaded, invalid = sample("loaded"), sample("invalid")

    caplog.set_level(logging.WARNING, logger="mutator.serve.dockerreload")
    target = volume.path.resolve()
    for garbage in ('{"auths": {"registry.exa', "", "\xff not json"):  # mid-write, truncated, binary
        target.write_bytes(garbage.encode("latin-1"))
        os.utime(target, ns=(1, len(garbage) + 1))  # a new stamp, even within one clock tick
        assert reloader.check() is False
        assert reloader.check() is False  # the same bad file: not warned about again
        assert credential_password(sources, image) == "first-pw"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3 and all("is not JSON" in w for w in warnings), warnings
    assert (sample("loaded"), sample("invalid")) == (loaded, invalid + 3)

    volume.publish(auths("registry.example:5000", "second-pw"))
    assert reloader.check() is True and credential_password(sources, image) == "second-pw"
    volume.publish(auths("registry.example:5000", "second-pw"))  # the same bytes once more
    assert reloader.check() is False and reloader.reloads == 1

    caplog.clear()
    (volume.root / "..data").unlink()
    assert reloader.check() is False and reloader.check() is False
    assert credential_password(sources, image) == "second-pw"
    assert [r.getMessage() for r in caplog.records] == [f"docker config {volume.path} is gone; keeping the "
                                                         "credentials read before"]
    assert sample("loaded") == loaded + 1


async def test_new_credentials_fetch_their_own_token(token_registry, token_server, resolver_for, volume):
    """Tokens are cached per credential: bob's token (no pull grant) is not reused for alice."""
    host, image = token_registry.server.host, token_registry.private
    volume.publish(auths(host, BOB_PASSWORD, user="bob"))
    sources = CredentialSources()
    reloader = DockerConfigReloader(sources, str(volume.path))
    resolver = resolver_for(token_registry.config, sources)

    async def resolve() -> object:
        deadline = asyncio.get_running_loop().time() + 10
        return (await resolver.resolve([image], deadline=deadline, pull=PullContext("team-a")))[image]

    refused = await resolve()
    assert isinstance(refused, ImageFailure) and not refused.temporary, refused
    issued = len(token_server.issued)

    volume.publish(auths(host, ALICE_PASSWORD))
    assert reloader.check() is True
    found = await resolve()
    assert isinstance(found, ImageUser) and found.uid == 1202, found
    assert len(token_server.issued) > issued  # a token fetched with alice's credentials
