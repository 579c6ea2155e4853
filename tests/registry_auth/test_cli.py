"""``mutator resolve`` with credentials from a Docker config and a plugin, and no secret in its output."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.registry_auth.conftest import ALICE_PASSWORD, ALICE_REFRESH
from tests.registry_auth.test_plugins import Plugin

pytestmark = pytest.mark.registry


def mutator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutator", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.fixture
def files(tmp_path, ca, token_registry, basic_registry):
    """A mutator config reaching both registries, and a Docker config with alice's credentials."""
    config = tmp_path / "mutator.yaml"
    config.write_text(yaml.safe_dump({"registries": {
        token_registry.server.host: {"ca_file": ca.cert_file},
        basic_registry.server.host: {"ca_file": ca.cert_file},
    }}))
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {
        f"https://{token_registry.server.host}/private": {"identitytoken": ALICE_REFRESH},
        token_registry.server.host: {
            "auth": base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode()},
    }}))
    return config, docker


def test_resolve_reads_private_images_with_a_docker_config(files, token_registry):
    config, docker = files
    result = mutator("resolve", "--config", str(config), "--docker-config", str(docker / "config.json"),
                     token_registry.private)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["uid"] == 1202

    without = mutator("resolve", "--config", str(config), token_registry.private, env={"DOCKER_CONFIG": ""})
    assert without.returncode == 1 and "no credentials match this image" in without.stdout


def test_docker_config_env_is_the_default(files, token_registry):
    config, docker = files
    result = mutator("resolve", "--config", str(config), token_registry.private,
                     env={"DOCKER_CONFIG": str(docker)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["uid"] == 1202


def test_an_unreadable_docker_config_is_a_clear_error(files, tmp_path):
    config, _ = files
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = mutator("resolve", "--config", str(config), "--docker-config", str(broken), "x.io/a")
    assert result.returncode == 2 and f"docker config {broken} is not JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_secret_appears_in_verbose_output(files, tmp_path, token_server, token_registry,
                                              basic_registry):
    """Every credential path at once, debug logging on: the output never holds a password or token."""
    config, docker = files
    plugin = Plugin(tmp_path, basic_registry.server.host)
    plugin.configure()  # alice for the Basic registry, from the node's plugin
    settings = yaml.safe_load(config.read_text())
    settings.update(credential_provider_config=str(plugin.config),
                    credential_provider_bin_dir=str(plugin.bin_dir))
    config.write_text(yaml.safe_dump(settings))
    issued_before = len(token_server.issued)

    result = mutator("-v", "resolve", "--config", str(config), "--docker-config", str(docker / "config.json"),
                     token_registry.private, token_registry.public, basic_registry.private)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [json.loads(line)["uid"] for line in result.stdout.splitlines()] == [1202, 1201, 1302]
    tokens = token_server.issued[issued_before:]
    assert len(tokens) == 2  # refresh grant for the private repository, Basic → token for the public one
    assert plugin.invocations()  # the plugin's credentials were used too
    secrets = [ALICE_PASSWORD, ALICE_REFRESH, base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode()]
    secrets += tokens + [token.rsplit(".", 1)[1] for token in tokens]  # whole tokens and signatures
    for secret in secrets:
        assert secret not in output
    assert "DEBUG" in output  # the run did log at debug level


def test_serve_refuses_a_broken_credential_file_before_it_starts(tmp_path):
    broken = tmp_path / "config.json"
    broken.write_text("[not an object")
    config = tmp_path / "mutator.yaml"
    config.write_text(yaml.safe_dump({"docker_config": str(broken)}))
    result = mutator("serve", "--config", str(config), "--dev", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and f"docker config {broken} is not JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_review_reads_a_pod_with_the_docker_config(files, token_registry, tmp_path):
    config, docker = files
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                   "spec": {"containers": [{"name": "c", "image": token_registry.private}]}}))
    result = mutator("review", "--config", str(config), "--docker-config", str(docker / "config.json"),
                     "-o", "json", str(pod))
    assert result.returncode == 0, result.stdout + result.stderr
    (container,) = json.loads(result.stdout)["workloads"][0]["containers"]
    assert (container["verdict"], container["uid"], container["gid"]) == ("patch", 1202, 1202), container
