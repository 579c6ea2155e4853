"""The keyring offers what the kubelet would offer, most specific first, and never shows a secret."""

import base64
import logging

import pytest

from mutator.resolve.registry.authn.keyring import Credential, Keyring, matches


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _users(credentials: list[Credential]) -> list[str]:
    return [c.username for c in credentials]


@pytest.mark.parametrize(
    ("key", "image", "expected"),
    [
        ("registry.example.com", "registry.example.com/team/app", True),
        ("https://registry.example.com", "registry.example.com/team/app", True),
        ("http://registry.example.com/v2/", "registry.example.com/team/app", True),
        ("registry.example.com/team", "registry.example.com/team/app", True),
        ("registry.example.com/team", "registry.example.com/other/app", False),
        ("*.example.com", "registry.example.com/app", True),
        ("*.example.com", "a.registry.example.com/app", False),  # a glob spans one label
        ("*.example.com", "example.com/app", False),
        ("registry.*.com", "registry.example.com/app", True),
        ("registry.example.com", "registry.example.com:5000/app", False),  # port must match
        ("registry.example.com:5000", "registry.example.com/app", False),
        ("registry.example.com:5000", "registry.example.com:5000/app", True),
        ("127.0.0.1:5000", "127.0.0.1:5000/app", True),
        ("[::1]:5000", "[::1]:5000/app", True),
        ("[::1]:5000", "[::1]:5001/app", False),
        ("Registry.Example.COM", "registry.example.com/app", True),
        ("other.example.com", "registry.example.com/app", False),
        # Docker Hub's names are one registry
        ("https://index.docker.io/v1/", "docker.io/library/nginx", True),
        ("registry-1.docker.io", "docker.io/library/nginx", True),
        ("docker.io", "docker.io/library/nginx", True),
        ("docker.io/library", "docker.io/bitnami/redis", False),
        ("ftp://registry.example.com", "registry.example.com/app", False),
    ],
)
def test_host_matching_follows_the_kubelet(key, image, expected):
    assert matches(key, image) is expected


def test_the_most_specific_key_comes_first_and_every_match_is_returned():
    keyring = Keyring.from_docker_config(
        {
            "auths": {
                "*.example.com": {"auth": _auth("wildcard", "w")},
                "registry.example.com": {"auth": _auth("host", "h")},
                "registry.example.com/team": {"auth": _auth("team", "t")},
                "registry.example.com/team/app": {"username": "app", "password": "a"},
                "registry.example.com/other": {"auth": _auth("other", "o")},
            }
        },
        source="docker-config test",
    )
    assert _users(keyring.lookup("registry.example.com/team/app")) == ["app", "team", "host", "wildcard"]
    assert _users(keyring.lookup("registry.example.com/solo")) == ["host", "wildcard"]
    assert keyring.lookup("unrelated.io/app") == []


def test_legacy_dockercfg_and_tokens_are_read():
    keyring = Keyring.from_docker_config(
        {
            "https://index.docker.io/v1/": {"auth": _auth("hub", "p:with:colons"), "email": "x@y"},
            "ghcr.io": {"identitytoken": "refresh-me", "auth": _auth("<token>", "")},
            "quay.io": {"registrytoken": "bearer-me"},
        },
        source="dockercfg test",
    )
    (hub,) = keyring.lookup("docker.io/library/nginx")
    assert (hub.username, hub.password, hub.source) == ("hub", "p:with:colons", "dockercfg test")
    (ghcr,) = keyring.lookup("ghcr.io/org/app")
    assert (ghcr.username, ghcr.identity_token) == ("<token>", "refresh-me")
    (quay,) = keyring.lookup("quay.io/org/app")
    assert quay.registry_token == "bearer-me"


def test_malformed_entries_are_skipped_with_a_reason(caplog):
    caplog.set_level(logging.WARNING)
    keyring = Keyring.from_docker_config(
        {
            "auths": {
                "bad-base64.io": {"auth": "%%%not base64"},
                "no-colon.io": {"auth": base64.b64encode(b"justuser").decode()},
                "not-object.io": "user:pass",
                "wrong-type.io": {"username": 7, "password": "x"},
                "empty.io": {"email": "only@mail"},
                "has space.io": {"auth": _auth("u", "p")},
                "newline-token.io": {"registrytoken": "abc\r\nX-Evil: 1"},
                "good.io": {"auth": _auth("u", "p")},
            }
        },
        source="docker-config mixed",
    )
    assert len(keyring) == 1
    assert _users(keyring.lookup("good.io/app")) == ["u"]
    for key in ("bad-base64.io", "no-colon.io", "not-object.io", "wrong-type.io", "empty.io", "has space.io",
                "newline-token.io"):
        assert key in caplog.text
    assert "X-Evil" not in caplog.text


@pytest.mark.parametrize("document", [[], "text", {"auths": ["x"]}, {"auths": None}])
def test_a_malformed_document_is_an_empty_keyring(document):
    assert len(Keyring.from_docker_config(document, source="bad")) == 0


def test_merge_keeps_every_entry_and_the_earlier_keyring_first_on_ties():
    first = Keyring.from_docker_config({"auths": {"r.io": {"auth": _auth("first", "1")}}}, source="a")
    second = Keyring.from_docker_config(
        {"auths": {"r.io": {"auth": _auth("second", "2")}, "r.io/deep": {"auth": _auth("deep", "3")}}},
        source="b",
    )
    merged = Keyring.merge(first, second)
    assert _users(merged.lookup("r.io/deep/app")) == ["deep", "first", "second"]
    assert _users(Keyring.merge(second, first).lookup("r.io/app")) == ["second", "first"]


def test_secrets_never_show_and_fingerprints_tell_credentials_apart():
    secret = Credential(
        username="alice", password="hunter2-pw", identity_token="idtok-xyz", registry_token="regtok-abc",
        source="secret ns/pull",
    )
    for text in (repr(secret), str(secret), repr(Keyring([("r.io", secret)]))):
        for material in ("hunter2-pw", "idtok-xyz", "regtok-abc"):
            assert material not in text
    assert "alice" in repr(secret) and "secret ns/pull" in str(secret)
    same = Credential(username="alice", password="hunter2-pw", identity_token="idtok-xyz",
                      registry_token="regtok-abc")
    assert secret.fingerprint == same.fingerprint
    assert secret.fingerprint != Credential(username="alice", password="other").fingerprint
    assert "hunter2" not in secret.fingerprint and len(secret.fingerprint) == 16
    assert Credential().fingerprint == "anonymous"
