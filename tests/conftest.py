"""Session fixtures: a real registry on loopback, holding images the tests build and push."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support import images as build
from tests.support.faultproxy import FaultProxy
from tests.support.images import Pusher, group, layer, passwd
from tests.support.registry import RegistryServer

APP_FILES = {"srv/app/main.sh": b"#!/bin/sh\necho hello\n"}


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    server = RegistryServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def silent_registry() -> Iterator[str]:
    """HOST:PORT of a TCP peer that accepts and never answers: the slowest registry there is."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def fault_proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """The session registry behind a proxy the tests own, one per module: each module sets
    (and resets) the faults it needs, so no fault leaks into another module's tests."""
    front = FaultProxy(registry.url).start()
    yield front
    front.stop()


@pytest.fixture(scope="session")
def pusher(registry: RegistryServer) -> Pusher:
    return Pusher(registry.url)


@pytest.fixture(scope="session")
def images(pusher: Pusher) -> dict[str, str]:
    """Every kind of image the webhook must tell apart, by name → pushed reference."""
    refs: dict[str, str] = {}

    def push(name: str, user: str | None, *layers: build.Blob, docker: bool = False) -> None:
        refs[name] = pusher.image(f"test/{name}", "v1", user=user, layers=layers, docker=docker).reference

    base = layer({"etc/passwd": passwd(("app", 1000, 1000)), "etc/group": group(("app", 1000))})
    push("named-base", "app", base, layer(APP_FILES))
    # A big base layer that must not be read: the user is added by an upper layer.
    push("named-upper", "node",
         layer({"etc/passwd": passwd(), "etc/group": group()}, padding_files=64),
         layer({"etc/passwd": passwd(("node", 1001, 1002)), "etc/group": group(("node", 1002))}),
         layer(APP_FILES))
    push("name-group", "app:staff",
         layer({"etc/passwd": passwd(("app", 1000, 1000)),
                "etc/group": group(("app", 1000), ("staff", 50))}))
    push("uid-groupname", "1000:staff",
         layer({"etc/passwd": passwd(("app", 1000, 1000)),
                "etc/group": group(("app", 1000), ("staff", 50))}))
    push("name-gid", "app:4242", base)
    push("numeric", "1234", layer(APP_FILES))
    push("numeric-root", "0", layer(APP_FILES))
    push("no-user", None, base)
    push("empty-user", "", base)
    push("root-name", "toor", layer({"etc/passwd": passwd(("toor", 0, 0))}))
    push("missing-name", "ghost", base)
    push("missing-group", "app:wheel", base)
    push("no-passwd", "app", layer(APP_FILES))
    push("whiteout", "app", base, layer(whiteouts=["etc/passwd"]))
    push("opaque", "app", base, layer({"etc/hostname": b"x\n"}, opaque=["etc"]))
    push("opaque-readd", "app", base,
         layer({"etc/passwd": passwd(("app", 2000, 2000))}, opaque=["etc"]))
    push("dir-whiteout", "app", base, layer(whiteouts=["etc"]))
    push("uncompressed", "app",
         layer({"etc/passwd": passwd(("app", 1500, 1500))}, compress=False))
    push("symlink", "app", layer(symlinks={"etc/passwd": "../usr/lib/passwd"}))
    push("docker-schema2", "web",
         layer({"etc/passwd": passwd(("web", 1500, 1501))}), docker=True)

    amd64 = pusher.image("test/multi", "amd64", user="alpha",
                         layers=[layer({"etc/passwd": passwd(("alpha", 1100, 1100))})])
    arm64 = pusher.image("test/multi", "arm64", user="beta", architecture="arm64",
                         layers=[layer({"etc/passwd": passwd(("beta", 2200, 2200))})])
    refs["index"] = pusher.index("test/multi", "v1", [
        (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        (amd64, {"os": "linux", "architecture": "amd64"}),
    ]).reference
    refs["docker-list"] = pusher.index("test/multi", "list", [
        (amd64, {"os": "linux", "architecture": "amd64"}),
    ], docker=True).reference
    refs["index-no-amd64"] = pusher.index("test/multi", "armonly", [
        (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
    ]).reference
    return refs


@pytest.fixture(scope="session")
def registry_config(registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A config file that reaches the loopback registry over plain HTTP."""
    path = tmp_path_factory.mktemp("config") / "mutator.yaml"
    path.write_text(f'registries:\n  "{registry.host}": {{plain_http: true}}\n')
    return str(path)
