import pytest

from mutator.errors import InvalidReference
from mutator.resolve.registry.reference import parse

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
        ("ghcr.io/example/app:2.0", "ghcr.io", "example/app", "2.0", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b/c:x", "localhost:5000", "a/b/c", "x", None),
        ("127.0.0.1:5000/test/app:v1", "127.0.0.1:5000", "test/app", "v1", None),
        ("[::1]:5000/test/app", "[::1]:5000", "test/app", "latest", None),
        (f"nginx@{DIGEST}", "docker.io", "library/nginx", None, DIGEST),
        (f"nginx:1.25@{DIGEST}", "docker.io", "library/nginx", "1.25", DIGEST),
        ("my-registry.local/team_a/app__x:v1.2-rc", "my-registry.local", "team_a/app__x", "v1.2-rc", None),
    ],
)
def test_normalises_like_the_runtimes(text, registry, repository, tag, digest):
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_identifier_prefers_digest_and_str_round_trips():
    ref = parse(f"ghcr.io/a/b:1@{DIGEST}")
    assert ref.identifier == DIGEST
    assert str(ref) == f"ghcr.io/a/b:1@{DIGEST}"
    assert parse(str(ref)) == ref
    assert parse("nginx").identifier == "latest"
    assert str(parse("nginx")) == "docker.io/library/nginx:latest"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Nginx",
        "UPPER/app",
        "nginx:",
        "nginx@sha256:abc",
        "nginx@md5:" + "a" * 32,
        "nginx@sha256:" + "A" * 64,
        "a" * 256,
        "nginx:" + "t" * 129,
        "ex ample/app",
        "/app",
        "app//x",
    ],
)
def test_rejects_what_the_runtimes_reject(text):
    with pytest.raises(InvalidReference):
        parse(text)
