"""Every config value is checked at start, by type and range, with the key named in the error."""

from pathlib import Path

import pytest

from mutator.config import Config, Platform, RegistryConfig, from_mapping, load
from mutator.errors import ConfigError
from mutator.serve.tls import self_signed


def test_defaults_and_a_full_file(tmp_path):
    assert from_mapping({}) == Config()
    ca = tmp_path / "ca.pem"
    ca.write_text(Path(self_signed(str(tmp_path), ("127.0.0.1",))[0]).read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    config = from_mapping({
        "platform": "linux/arm64/v8",
        "registries": {"r.example:5000": {"plain_http": True}, "s.example": {"ca_file": str(ca)},
                       "t.example": None},
        "cache_ttl_seconds": 0,
        "cache_max_entries": 5,
        "lookup_timeout_seconds": 2.5,
        "default_admission_timeout_seconds": 30,
        "docker_config": str(ca),
        "docker_config_reload_seconds": 1,
        "credential_provider_config": str(ca),
        "credential_provider_bin_dir": str(bin_dir),
    })
    assert config.platform == Platform("linux", "arm64", "v8")
    assert config.registry("r.example:5000") == RegistryConfig(plain_http=True)
    assert config.registry("s.example").ca_file == str(ca)
    assert config.registry("t.example") == RegistryConfig() == config.registry("unlisted.example")
    assert config.cache_ttl_seconds == 0.0 and isinstance(config.lookup_timeout_seconds, float)
    assert config.credential_provider_bin_dir == str(bin_dir)
    assert config.docker_config_reload_seconds == 1.0 and Config().docker_config_reload_seconds == 5.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"registries": {"r.io": {"plain_http": "false"}}}, "r.io.plain_http must be true or false"),
        ({"registries": {"r.io": {"plain_http": 0}}}, "registries.r.io.plain_http must be true or false"),
        ({"registries": {"r.io": {"ca_file": "/nonexistent/ca.pem"}}}, "registries.r.io.ca_file: file"),
        ({"registries": {"r.io": {"insecure": True}}}, "unknown keys ['registries.r.io.insecure']"),
        ({"registries": {"r.io": {"insecure_skip_verify": "yes"}}}, "insecure_skip_verify must be true or"),
        ({"registries": {"r.io": "plain"}}, "registries.r.io must be a mapping"),
        ({"registries": ["r.io"]}, "registries must be a mapping"),
        ({"registries": {"r.io/path": {}}}, "'r.io/path' is not a HOST[:PORT]"),
        ({"lookup_timeout_seconds": 0}, "lookup_timeout_seconds must be greater than 0"),
        ({"lookup_timeout_seconds": "30"}, "lookup_timeout_seconds must be a number"),
        ({"lookup_timeout_seconds": True}, "lookup_timeout_seconds must be a number"),
        ({"lookup_timeout_seconds": float("nan")}, "lookup_timeout_seconds must be a finite number"),
        ({"cache_ttl_seconds": -1}, "cache_ttl_seconds must be at least 0"),
        ({"cache_max_entries": 0}, "cache_max_entries must be at least 1"),
        ({"cache_max_entries": 2.5}, "cache_max_entries must be an integer"),
        ({"default_admission_timeout_seconds": 31}, "default_admission_timeout_seconds must be at most 30"),
        ({"platform": "linux"}, "platform: platform must be OS/ARCH[/VARIANT]"),
        ({"platform": 7}, "platform must be OS/ARCH"),
        ({"docker_config": "/nonexistent/config.json"}, "docker_config: file /nonexistent/config.json"),
        ({"docker_config": 3}, "docker_config must be a path"),
        ({"docker_config_reload_seconds": 0}, "docker_config_reload_seconds must be greater than 0"),
        ({"docker_config_reload_seconds": "5s"}, "docker_config_reload_seconds must be a number"),
        ({"docker_config_reload_seconds": 3601}, "docker_config_reload_seconds must be at most 3600"),
        ({"credential_provider_bin_dir": "/nonexistent"}, "credential_provider_bin_dir: directory"),
        ({"cache_tll_seconds": 5}, "unknown keys ['cache_tll_seconds']"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(data, message):
    with pytest.raises(ConfigError) as error:
        from_mapping(data, source="mutator.yaml")
    assert str(error.value).startswith("mutator.yaml: ")
    assert message in str(error.value)


def test_a_plugin_config_needs_its_bin_dir(tmp_path):
    config_file = tmp_path / "providers.yaml"
    config_file.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        from_mapping({"credential_provider_config": str(config_file)})


@pytest.mark.parametrize(("text", "message"), [("[1, 2]", "the top level must be a mapping"),
                                               ("a: [", "is not valid YAML")])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(str(path))
