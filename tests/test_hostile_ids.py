"""Hostile ids in real images: the resolver reads them as the node would, and refuses what it would misread.

Images are built here and pushed to the session's loopback registry; the
lookups go through the real registry client and resolver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from mutator import metrics
from mutator.config import from_mapping
from mutator.decide import admission
from mutator.decide.images import ImageUser
from mutator.decide.passwd import MAX_ID
from mutator.decide.policy import Mode
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver
from mutator.serve import pipeline
from tests.support.images import Pusher, layer

pytestmark = pytest.mark.registry

ARABIC_1000 = "\u0661\u0660\u0660\u0660"


@pytest.fixture(scope="module")
def id_images(pusher: Pusher) -> dict[str, str]:
    def push(name: str, user: str, passwd: bytes) -> str:
        return pusher.image(f"ids/{name}", "v1", user=user, layers=[layer({"etc/passwd": passwd})]).reference

    return {
        # CVE-2026-46680: the number is out of range, and the passwd defines it as a *name* for root
        "out-of-range": push("out-of-range", "4294967296", b"4294967296:x:0:0::/:/bin/sh\n"),
        "wraps-to-root": push("wraps-to-root", "app", b"root:x:0:0\napp:x:4294967296:1000::/:/bin/sh\n"),
        "root-group": push("root-group", "0:1000", b"root:x:0:0\n"),
        "top": push("top", "top", b"top:x:2147483647:2147483647::/:/bin/sh\n"),
        "arabic": push("arabic", ARABIC_1000, f"{ARABIC_1000}:x:1234:1234::/:/bin/sh\n".encode()),
    }


@pytest.fixture
async def resolver(registry) -> AsyncIterator[Resolver]:
    config = from_mapping({"registries": {registry.host: {"plain_http": True}}})
    async with aiohttp.ClientSession() as session:
        yield Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)


async def test_an_out_of_range_number_is_never_looked_up_as_a_name(resolver, id_images):
    before = metrics.LAYER_BYTES._value.get()
    result = await resolver.lookup(id_images["out-of-range"])
    assert isinstance(result, ImageUser) and result.uid is None
    assert "'4294967296' is a number outside 0..2147483647" in (result.problem or "")
    assert metrics.LAYER_BYTES._value.get() == before  # not one layer byte read for it


async def test_a_uid_field_the_node_would_wrap_to_root_is_refused_with_its_line(resolver, id_images):
    result = await resolver.lookup(id_images["wraps-to-root"])
    assert isinstance(result, ImageUser) and result.uid is None
    assert result.problem == (
        "line 2 of /etc/passwd ('app:x:4294967296:1000::/:/bin/sh') has uid field '4294967296', "
        "not an id in 0..2147483647: the node would use uid 0"
    )


@pytest.mark.parametrize(("name", "uid", "gid"), [("root-group", 0, 1000), ("top", MAX_ID, MAX_ID),
                                                  ("arabic", 1234, 1234)])
async def test_ids_as_the_node_reads_them(resolver, id_images, name, uid, gid):
    result = await resolver.lookup(id_images[name])
    assert isinstance(result, ImageUser) and (result.uid, result.gid) == (uid, gid)


@pytest.mark.parametrize(("name", "allowed", "fragment"), [
    ("out-of-range", False, "cannot be verified as non-root: USER '4294967296'"),
    ("wraps-to-root", False, "line 2 of /etc/passwd"),
    ("root-group", False, "would run as root: its image sets USER '0:1000'"),
    ("top", True, ""),
])
async def test_the_webhook_answers(resolver, id_images, name, allowed, fragment):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": id_images[name]}]}}
    review = admission.validate(admission.review_for_pod(pod))
    outcome = await pipeline.handle(review, mode=Mode.ENFORCE, resolver=resolver,
                                   deadline=pipeline.deadline_for(10))
    response = outcome.response["response"]
    assert response["allowed"] is allowed
    if allowed:
        assert admission.patch_of(outcome.response)[0]["value"]["runAsUser"] == MAX_ID
    else:
        assert fragment in response["status"]["message"] and "patch" not in response
