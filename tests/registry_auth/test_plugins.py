"""Kubelet credential provider plugins: a script the tests own speaks the exec API, configured
through a real CredentialProviderConfig, and its answers unlock the token-protected registry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from mutator.decide.images import ImageFailure, ImageUser
from mutator.errors import ConfigError
from mutator.resolve.registry.authn.credentials import CredentialSources, PullContext
from mutator.resolve.registry.authn.keyring import Keyring
from mutator.resolve.registry.authn.plugins import PluginCredentials, load_providers, parse_duration
from tests.registry_auth.conftest import ALICE_PASSWORD, BOB_PASSWORD, FakePods

pytestmark = pytest.mark.registry

PLUGIN = """\
#!{python}
import json, os, sys, time
request = json.load(sys.stdin)
with open(os.environ["PLUGIN_LOG"], "a") as log:
    log.write(request["apiVersion"] + " " + request["image"] + "\\n")
mode = os.environ.get("PLUGIN_MODE", "ok")
if mode == "fail":
    print("no credentials here", file=sys.stderr)
    sys.exit(3)
if mode == "garbage":
    print("this is not json " + os.environ["PLUGIN_PASSWORD"])
    sys.exit(0)
if mode == "hang":
    time.sleep(30)
answer = {{"apiVersion": request["apiVersion"], "kind": "CredentialProviderResponse",
          "cacheKeyType": os.environ["PLUGIN_CACHE_KEY_TYPE"],
          "auth": {{sys.argv[1]: {{"username": os.environ["PLUGIN_USER"],
                                   "password": os.environ["PLUGIN_PASSWORD"]}}}}}}
if os.environ.get("PLUGIN_CACHE_DURATION"):
    answer["cacheDuration"] = os.environ["PLUGIN_CACHE_DURATION"]
print(json.dumps(answer))
"""


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Plugin:
    """The plugin's files: bin dir, config, and the log of its invocations."""

    def __init__(self, directory: Path, host: str) -> None:
        self.bin_dir = directory / "bin"
        self.bin_dir.mkdir()
        executable = self.bin_dir / "test-plugin"
        executable.write_text(PLUGIN.format(python=sys.executable))
        executable.chmod(0o755)
        self.log = directory / "invocations.log"
        self.config = directory / "providers.yaml"
        self.host = host

    def configure(self, *, mode: str = "ok", key_type: str = "Registry", duration: str | None = "30s",
                  default: str = "10s", user: str = "alice", password: str = ALICE_PASSWORD,
                  match: str | None = None) -> None:
        env = {"PLUGIN_LOG": str(self.log), "PLUGIN_MODE": mode, "PLUGIN_CACHE_KEY_TYPE": key_type,
               "PLUGIN_USER": user, "PLUGIN_PASSWORD": password, "PLUGIN_CACHE_DURATION": duration or ""}
        self.config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1",
            "kind": "CredentialProviderConfig",
            "providers": [{
                "name": "test-plugin",
                "matchImages": [match or self.host],
                "defaultCacheDuration": default,
                "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                "args": [self.host],
                "env": [{"name": k, "value": v} for k, v in env.items()],
            }],
        }))

    def plugins(self, clock: Clock | None = None, timeout: float = 10.0) -> PluginCredentials:
        return PluginCredentials(load_providers(str(self.config), str(self.bin_dir)),
                                 clock=clock or Clock(), timeout=timeout)

    def invocations(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def plugin(tmp_path, token_registry) -> Plugin:
    return Plugin(tmp_path, token_registry.server.host)


async def test_plugin_credentials_read_a_private_image(plugin, token_registry, resolver_for):
    plugin.configure()
    resolver = resolver_for(token_registry.config, CredentialSources(plugins=plugin.plugins()))
    result = await resolver.lookup(token_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    assert plugin.invocations() == [f"credentialprovider.kubelet.k8s.io/v1 {token_registry.private}"]


@pytest.mark.parametrize(("key_type", "other_image_runs_again"), [("Registry", False), ("Image", True)])
async def test_cache_duration_and_key_type_are_honoured(plugin, token_registry, resolver_for,
                                                        key_type, other_image_runs_again):
    plugin.configure(key_type=key_type, duration="30s")
    clock = Clock()
    resolver = resolver_for(token_registry.config, CredentialSources(plugins=plugin.plugins(clock)))
    assert (await resolver.lookup(token_registry.private)).uid == 1202
    assert (await resolver.lookup(token_registry.private)).uid == 1202
    assert len(plugin.invocations()) == 1
    assert (await resolver.lookup(token_registry.public)).uid == 1201
    assert len(plugin.invocations()) == (2 if other_image_runs_again else 1)
    clock.now += 31
    assert (await resolver.lookup(token_registry.private)).uid == 1202
    assert len(plugin.invocations()) == (3 if other_image_runs_again else 2)


async def test_the_default_cache_duration_applies_when_the_plugin_names_none(plugin, token_registry,
                                                                            resolver_for):
    plugin.configure(duration=None, default="5m")
    clock = Clock()
    resolver = resolver_for(token_registry.config, CredentialSources(plugins=plugin.plugins(clock)))
    await resolver.lookup(token_registry.private)
    clock.now += 299
    await resolver.lookup(token_registry.private)
    assert len(plugin.invocations()) == 1
    clock.now += 2
    await resolver.lookup(token_registry.private)
    assert len(plugin.invocations()) == 2


@pytest.mark.parametrize("mode", ["fail", "garbage", "hang"])
async def test_a_failing_plugin_falls_through_to_the_next_source(plugin, token_registry, resolver_for,
                                                                 caplog, mode):
    plugin.configure(mode=mode)
    docker_config = Keyring.from_docker_config(
        {"auths": {token_registry.server.host: {"username": "alice", "password": ALICE_PASSWORD}}},
        source="docker-config test")
    sources = CredentialSources(plugins=plugin.plugins(timeout=1.0), docker_config=docker_config)
    result = await resolver_for(token_registry.config, sources).lookup(token_registry.private)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    assert "credential provider test-plugin gave nothing" in caplog.text
    assert ALICE_PASSWORD not in caplog.text


async def test_a_plugin_is_not_run_for_images_it_does_not_match(plugin, token_registry, resolver_for):
    plugin.configure(match="*.example.com")
    result = await resolver_for(token_registry.config, CredentialSources(plugins=plugin.plugins())) \
        .lookup(token_registry.public)
    assert result.uid == 1201 and plugin.invocations() == []


async def test_the_first_source_with_matching_credentials_wins(plugin, token_registry, resolver_for):
    plugin.configure(user="bob", password=BOB_PASSWORD)  # bob cannot read the private image
    host = token_registry.server.host
    pods = FakePods({
        "team-a": Keyring.from_docker_config(
            {"auths": {host: {"username": "alice", "password": ALICE_PASSWORD}}},
            source="secret team-a/pull"),
        "team-b": Keyring.from_docker_config({"auths": {"other.example": {"auth": "dTpw"}}},
                                             source="secret team-b/pull"),
    })
    sources = CredentialSources(pods=pods, plugins=plugin.plugins())
    resolver = resolver_for(token_registry.config, sources)
    team_a = PullContext(namespace="team-a", pull_secrets=("pull",))
    assert (await resolver.lookup(token_registry.private, pull=team_a)).uid == 1202
    assert plugin.invocations() == []  # the Pod's own secret matched: the plugin was not needed
    # team-b's secret is for another registry, so the node's plugin answers (and bob is refused)
    refused = await resolver.lookup(token_registry.private, pull=PullContext(namespace="team-b"))
    assert isinstance(refused, ImageFailure) and "plugin test-plugin" in refused.message
    assert len(plugin.invocations()) == 1 and [p.namespace for p in pods.asked] == ["team-a", "team-b"]


async def test_unreadable_pod_secrets_fall_through_to_the_node(plugin, token_registry, resolver_for, caplog):
    plugin.configure()  # alice, from the node's plugin
    sources = CredentialSources(pods=FakePods({}), plugins=plugin.plugins())
    broken = PullContext(namespace="broken", service_account="builder")
    result = await resolver_for(token_registry.config, sources).lookup(token_registry.private, pull=broken)
    assert isinstance(result, ImageUser) and result.uid == 1202, result
    assert "pull secrets of builder in broken could not be read: the API server is not" in caplog.text


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(kind="Other"), "is not a CredentialProviderConfig"),
    (lambda c: c["providers"][0].update(name="../bin/sh"), "must be a plain file name"),
    (lambda c: c["providers"][0].update(name="absent"), "is not an executable file"),
    (lambda c: c["providers"][0].update(matchImages=[]), "matchImages must be a non-empty list"),
    (lambda c: c["providers"][0].update(defaultCacheDuration="soon"), "defaultCacheDuration"),
    (lambda c: c["providers"][0].update(apiVersion="v0"), "apiVersion must be one of"),
    (lambda c: c["providers"][0].update(env=[{"name": "X"}]), "env entries need"),
])
def test_a_bad_provider_config_is_refused_at_start(plugin, change, message):
    plugin.configure()
    document = yaml.safe_load(plugin.config.read_text())
    change(document)
    plugin.config.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=message):
        load_providers(str(plugin.config), str(plugin.bin_dir))


@pytest.mark.parametrize(("text", "seconds"), [("0", 0), ("90s", 90), ("1h30m", 5400), ("1.5m", 90),
                                               ("250ms", 0.25), ("12h", 43200)])
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "m", "1h 2m", None, 5])
def test_not_go_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
