"""The registry path against a real registry on loopback, with images built by the tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from mutator.config import Config, Platform, RegistryConfig, from_mapping
from mutator.decide.images import ImageFailure, ImageUser
from mutator.errors import RegistryError
from mutator.resolve.registry import reference, rootfs
from mutator.resolve.registry.client import RegistryClient, verify
from mutator.resolve.resolver import Resolver
from mutator.serve.tls import self_signed
from tests.support.images import Pusher, layer, passwd
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.registry


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def make_resolver(session: aiohttp.ClientSession, registry: RegistryServer, **settings) -> Resolver:
    config = from_mapping({"registries": {registry.host: {"plain_http": True}}, **settings})
    return Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)


@pytest.mark.parametrize(
    ("name", "user", "uid", "gid"),
    [
        ("named-base", "app", 1000, 1000),
        ("named-upper", "node", 1001, 1002),
        ("name-group", "app:staff", 1000, 50),
        ("uid-groupname", "1000:staff", 1000, 50),
        ("name-gid", "app:4242", 1000, 4242),
        ("numeric", "1234", 1234, None),
        ("numeric-root", "0", 0, None),
        ("no-user", "", 0, 0),
        ("empty-user", "", 0, 0),
        ("root-name", "toor", 0, 0),
        ("opaque-readd", "app", 2000, 2000),
        ("uncompressed", "app", 1500, 1500),
        ("docker-schema2", "web", 1500, 1501),
        ("index", "alpha", 1100, 1100),
        ("docker-list", "alpha", 1100, 1100),
    ],
)
async def test_resolves_every_image_kind(session, registry, images, name, user, uid, gid):
    result = await make_resolver(session, registry).lookup(images[name])
    assert isinstance(result, ImageUser), result
    assert (result.user, result.uid, result.gid) == (user, uid, gid)
    assert result.runs_as_root is (uid == 0)
    assert result.digest.startswith("sha256:") and result.problem is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("missing-name", "user 'ghost' not found: the image has no such user in /etc/passwd"),
        ("missing-group", "group 'wheel' not found: the image has no such group in /etc/group"),
        ("no-passwd", "user 'app' not found: the image has no /etc/passwd"),
        ("whiteout", "user 'app' not found: the image has no /etc/passwd"),
        ("opaque", "user 'app' not found: the image has no /etc/passwd"),
        ("dir-whiteout", "user 'app' not found: the image has no /etc/passwd"),
    ],
)
async def test_names_the_image_does_not_define_are_unresolvable(session, registry, images, name, problem):
    result = await make_resolver(session, registry).lookup(images[name])
    assert isinstance(result, ImageUser) and result.uid is None
    assert result.problem == problem and not result.runs_as_root


async def test_a_dangling_passwd_link_is_unresolvable_with_its_reason(session, registry, images):
    result = await make_resolver(session, registry).lookup(images["symlink"])
    assert isinstance(result, ImageUser) and result.uid is None and not result.runs_as_root
    assert result.problem == ("cannot read the user: /etc/passwd is a link to /usr/lib/passwd, "
                              "which does not exist in the image")


async def test_platform_is_chosen_from_the_index(session, registry, images):
    resolver = make_resolver(session, registry)
    arm = await resolver.lookup(images["index"], platform=Platform("linux", "arm64", "v8"))
    amd = await resolver.lookup(images["index"])
    assert (arm.user, arm.uid) == ("beta", 2200)
    assert (amd.user, amd.uid) == ("alpha", 1100)
    assert arm.digest == amd.digest  # both report the index digest the tag points at
    missing = await resolver.lookup(images["index-no-amd64"])
    assert isinstance(missing, ImageFailure) and not missing.temporary
    assert "has no linux/amd64 image (it has linux/arm64/v8)" in missing.message


async def test_pull_by_digest_and_a_wrong_digest(session, registry, images, pusher):
    resolver = make_resolver(session, registry)
    by_tag = await resolver.lookup(images["named-base"])
    name = images["named-base"].rsplit(":", 1)[0]
    by_digest = await resolver.lookup(f"{name}@{by_tag.digest}")
    assert (by_digest.uid, by_digest.digest) == (1000, by_tag.digest)
    wrong = await resolver.lookup(f"{name}@sha256:{'0' * 64}")
    assert isinstance(wrong, ImageFailure) and not wrong.temporary and "404" in wrong.message


async def test_unknown_repository_and_bad_reference(session, registry):
    resolver = make_resolver(session, registry)
    missing = await resolver.lookup(f"{registry.host}/nope/nothing:1")
    assert isinstance(missing, ImageFailure) and not missing.temporary and "not found" in missing.message
    bad = await resolver.lookup("Not A Reference")
    assert isinstance(bad, ImageFailure) and "invalid image reference" in bad.message


async def test_stops_at_the_first_layer_with_the_files(session, registry, images):
    """The big base layer of named-upper is never downloaded: the user lives in layer 2."""
    config = Config(registries={registry.host: RegistryConfig(plain_http=True)})
    client = RegistryClient(session=session, registries=config.registry)
    ref = reference.parse(images["named-upper"])
    image = await client.image(ref, config.platform)
    base, middle, top = image.layers
    files = await rootfs.account_files(client, ref, image.layers, group=True)
    assert b"node:x:1001:1002" in files.passwd and b"node:x:1002:" in files.group
    assert files.layers_read == 2
    assert files.bytes_read <= top.size + middle.size < base.size
    assert top.digest not in files.unverified_layers  # read to its end: its digest was checked


async def test_a_silent_registry_is_cut_off_at_the_deadline(session, silent_registry):
    """A peer that accepts the connection and never answers must not hold the admission."""
    host = silent_registry
    config = from_mapping({"registries": {host: {"plain_http": True}}, "lookup_timeout_seconds": 2})
    resolver = Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)
    image = f"{host}/slow/app:1"
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    result = (await resolver.resolve([image], deadline=loop.time() + 0.3))[image]
    waited = time.monotonic() - started
    assert isinstance(result, ImageFailure) and result.temporary
    assert result.message == "no answer from the registry before the admission deadline"
    assert 0.3 <= waited < 1.0
    # the shared lookup itself is bounded too, and ends as a temporary failure
    late = await resolver.lookup(image)
    assert isinstance(late, ImageFailure) and "took over 2 s" in late.message


async def test_registry_behind_tls_with_a_private_ca(session, tmp_path):
    cert, key = self_signed(str(tmp_path), ("127.0.0.1",))
    server = RegistryServer(tls_cert=cert, tls_key=key).start()
    try:
        import ssl

        pushed = Pusher(server.url, context=ssl.create_default_context(cafile=cert)).image(
            "tls/app", "v1", user="app", layers=[layer({"etc/passwd": passwd(("app", 1300, 1300))})]
        )
        trusted = from_mapping({"registries": {server.host: {"ca_file": cert}}})
        resolver = Resolver(client=RegistryClient(session=session, registries=trusted.registry),
                            config=trusted)
        assert (await resolver.lookup(pushed.reference)).uid == 1300

        untrusted = Resolver(client=RegistryClient(session=session, registries=Config().registry),
                             config=Config())
        refused = await untrusted.lookup(pushed.reference)
        assert isinstance(refused, ImageFailure) and not refused.temporary
        assert f"set registries.{server.host}.ca_file" in refused.message
    finally:
        server.stop()


def test_verify_rejects_altered_content():
    data = b"hello"
    verify("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", data)
    with pytest.raises(RegistryError, match="does not match"):
        verify("sha256:" + "0" * 64, data)


async def test_an_unsupported_layer_type_is_a_clear_permanent_error(session, registry, pusher):
    odd = layer({"etc/passwd": passwd(("app", 1000, 1000))})
    odd = type(odd)("application/vnd.oci.image.layer.v1.tar+bzip2", odd.data, odd.diff_id)
    ref = pusher.image("test/bzip2", "v1", user="app", layers=[odd]).reference
    result = await make_resolver(session, registry).lookup(ref)
    assert isinstance(result, ImageFailure) and not result.temporary
    assert ("layer media type 'application/vnd.oci.image.layer.v1.tar+bzip2' is not supported"
            in result.message)
