"""Hostile layers served by the real registry: every one answered with a clear reason, in bounded time."""

from __future__ import annotations

import asyncio
import tarfile
import time
import tracemalloc

import pytest

from mutator import metrics
from mutator.decide.images import ImageFailure, ImageUser
from mutator.resolve.registry.layerscan import MAX_ACCOUNT_FILE_BYTES
from tests.support.bombs import MIB, big_file_layer, zeros_layer
from tests.support.images import encode, layer, passwd
from tests.support.resolving import make_resolver, open_session
from tests.support.rootfs_images import raw

pytestmark = pytest.mark.registry
session = pytest.fixture(open_session)
PASSWD_LAYER = layer({"etc/passwd": passwd(("app", 3000, 3000))})


def refused(result: object) -> str:
    if isinstance(result, ImageFailure):
        assert not result.temporary, result
        return result.message
    assert isinstance(result, ImageUser) and result.uid is None and not result.runs_as_root, result
    return result.problem or ""


@pytest.mark.parametrize(("kind", "what"), [
    (tarfile.FIFOTYPE, "a FIFO"), (tarfile.CHRTYPE, "a character device"),
    (tarfile.BLKTYPE, "a block device"),
])
async def test_a_special_file_at_etc_passwd_is_unresolvable(session, registry, pusher, kind, what):
    """containerd would open it: a FIFO blocks the container start, a device reads the host's."""
    ref = pusher.image(f"hostile/special-{what.split()[-1].lower()}", "v1", user="app",
                       layers=[PASSWD_LAYER, layer(special={"etc/passwd": kind})]).reference
    problem = refused(await make_resolver(session, registry).lookup(ref))
    assert problem == (f"cannot read the user: /etc/passwd is {what}, "
                       "not a file the runtime can read users from")


async def test_a_100_mb_passwd_is_refused_without_reading_it(session, registry, pusher):
    big = big_file_layer("etc/passwd", 100 * 1000 * 1000)
    ref = pusher.image("hostile/big-passwd", "v1", user="app", layers=[big]).reference
    before = metrics.LAYER_BYTES._value.get()
    problem = refused(await make_resolver(session, registry).lookup(ref))
    assert problem == (f"cannot read the user: /etc/passwd is 100000000 bytes, over the "
                       f"{MAX_ACCOUNT_FILE_BYTES} byte limit")
    assert metrics.LAYER_BYTES._value.get() - before < 2 * MIB  # the header decided; the body stayed unread


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
async def test_a_decompression_bomb_above_passwd_is_cut_off(session, registry, pusher, compress):
    bomb = zeros_layer(256, compress=compress)
    assert 256 * MIB / len(bomb.data) >= 900  # about 1000x, as a bomb is
    ref = pusher.image(f"hostile/bomb-{compress}", "v1", user="app", layers=[PASSWD_LAYER, bomb]).reference
    resolver = make_resolver(session, registry, max_scan_bytes=64 * MIB)
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = await resolver.lookup(ref)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "max_scan_bytes (67108864 decoded bytes per image)" in refused(result)
    assert time.monotonic() - started < 20
    assert peak < 24 * MIB  # streamed: never the layer, never the file, in memory


async def test_other_admissions_are_served_while_a_big_layer_is_scanned(session, registry, pusher):
    """Decoding runs in a worker thread: a small image resolves while a 256 MiB bomb is still decoding."""
    bomb = zeros_layer(256)
    big = pusher.image("hostile/slow-bomb", "v1", user="app", layers=[PASSWD_LAYER, bomb]).reference
    small = pusher.image("hostile/small", "v1", user="app", layers=[PASSWD_LAYER]).reference
    resolver = make_resolver(session, registry)
    scanning = metrics.INFLIGHT_LOOKUPS.labels("layer")
    lags: list[float] = []

    async def ticker() -> None:  # measures how late the loop wakes us while the bomb decodes
        while True:
            tick = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - tick - 0.005)

    ticking = asyncio.ensure_future(ticker())
    scan = asyncio.ensure_future(resolver.lookup(big))
    deadline = time.monotonic() + 10
    while scanning._value.get() == 0 and not scan.done():  # wait for the bomb's layer scan to begin
        assert time.monotonic() < deadline
        await asyncio.sleep(0)
    quick = await resolver.lookup(small)
    assert quick.uid == 3000
    assert not scan.done(), "the big scan ended before the small lookup: the test proves nothing"
    assert (await scan).uid == 3000  # under the default limit the bomb is just a big layer
    ticking.cancel()
    assert len(lags) > 20 and max(lags) < 0.25, max(lags)


async def test_a_tar_without_its_end_marker_is_read(session, registry, pusher):
    cut = layer({"etc/passwd": passwd(("app", 3100, 3100))}, end_marker=False)
    ref = pusher.image("hostile/no-end-marker", "v1", user="app", layers=[cut]).reference
    assert (await make_resolver(session, registry).lookup(ref)).uid == 3100


def _truncated(files: dict[str, bytes], keep: int) -> bytes:
    """The tar of *files* (no compression), cut after *keep* bytes."""
    return layer(files, compress=False).data[:keep]


async def test_a_truncated_layer_stands_where_it_decided(session, registry, pusher):
    files = {"etc/passwd": passwd(("app", 3200, 3200)), "srv/data": bytes(64 * 1024)}
    found_first = encode(_truncated(files, 8 * 1024))  # cut inside srv/data, after etc/passwd
    ref = pusher.image("hostile/truncated-after", "v1", user="app", layers=[found_first]).reference
    assert (await make_resolver(session, registry).lookup(ref)).uid == 3200

    cut_before = encode(_truncated({"srv/data": bytes(64 * 1024), "etc/passwd": b"x"}, 8 * 1024))
    ref = pusher.image("hostile/truncated-before", "v1", user="app",
                       layers=[PASSWD_LAYER, cut_before]).reference
    message = refused(await make_resolver(session, registry).lookup(ref))
    assert "is truncated after 8192 bytes and does not decide" in message and "/etc/passwd" in message


async def test_content_that_does_not_match_its_digest_is_refused(session, registry, pusher):
    upper = layer({"srv/app": b"A" * 4096}, compress=False)
    ref = pusher.image("hostile/altered", "v1", user="app", layers=[PASSWD_LAYER, upper]).reference
    stored = registry.blob_path(upper.digest)
    stored.write_bytes(upper.data.replace(b"A" * 4096, b"B" * 4096))  # same size, other bytes
    resolver = make_resolver(session, registry)
    message = refused(await resolver.lookup(ref))
    assert f"blob {upper.digest} hashed to sha256:" in message
    assert resolver.layers.peek(upper.digest) is None  # nothing learnt from it is kept


@pytest.mark.parametrize("name", [".wh..", "etc/.wh..."])
async def test_a_whiteout_naming_dot_or_dotdot_is_refused(session, registry, pusher, name):
    bad = layer(raw=[raw(name)])
    ref = pusher.image(f"hostile/whiteout{name.count('.')}", "v1", user="app",
                       layers=[PASSWD_LAYER, bad]).reference
    assert "invalid whiteout" in refused(await make_resolver(session, registry).lookup(ref))


async def test_garbage_for_a_layer_is_a_clear_error(session, registry, pusher):
    from tests.support.images import OCI_LAYER_GZIP, Blob

    junk = Blob(OCI_LAYER_GZIP, b"\x1f\x8b" + bytes(range(256)) * 4, "sha256:" + "0" * 64)
    ref = pusher.image("hostile/junk", "v1", user="app", layers=[PASSWD_LAYER, junk]).reference
    assert "is not valid gzip" in refused(await make_resolver(session, registry).lookup(ref))


def test_a_zstd_frame_asking_for_a_huge_window_is_refused():
    """A frame may ask for a 2 GiB window; we allocate at most 128 MiB (builders use 8 or 128)."""
    import io

    import zstandard

    from mutator.errors import UnsupportedImage
    from mutator.resolve.registry import layerscan

    params = zstandard.ZstdCompressionParameters(window_log=28, enable_ldm=True)
    buffer = io.BytesIO()
    writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(buffer, closefd=False)
    writer.write(b"x" * 100_000)
    writer.flush(zstandard.FLUSH_FRAME)
    assert zstandard.get_frame_parameters(buffer.getvalue()).window_size == 256 * MIB
    with pytest.raises(UnsupportedImage, match="needs a zstd window over the 134217728 bytes"):
        layerscan.scan(io.BytesIO(buffer.getvalue()), layerscan.ZSTD, frozenset({"etc/passwd"}),
                       budget=layerscan.Budget(MIB * 1024), what="layer x")


async def test_a_layer_trickled_past_the_lookup_timeout_stops_its_read(session, registry, pusher):
    """The lookup gives up at lookup_timeout_seconds; the layer read it started stops with it."""
    from tests.support.faultproxy import Fault, FaultProxy

    upper = layer({"srv/app": bytes(range(256)) * 64})
    pushed = pusher.image("hostile/trickled", "v1", user="app", layers=[PASSWD_LAYER, upper]).reference
    proxy = FaultProxy(registry.url).start()
    try:
        image = f"{proxy.host}/{pushed.split('/', 1)[1]}"
        proxy.set_fault(Fault("trickle", match=f"/blobs/{upper.digest}"))
        resolver = make_resolver(session, registry, lookup_timeout_seconds=1,
                                 registries={proxy.host: {"plain_http": True}})
        reading = metrics.INFLIGHT_LOOKUPS.labels("layer")
        before = reading._value.get()
        started = time.monotonic()
        late = await resolver.lookup(image)
        assert isinstance(late, ImageFailure) and late.temporary and "took over 1 s" in late.message
        assert time.monotonic() - started < 3
        for _ in range(200):  # bounded: the cancelled read lets go of its slot promptly
            if reading._value.get() == before:
                break
            await asyncio.sleep(0.01)
        assert reading._value.get() == before
        assert resolver.layers.peek(upper.digest) is None
        proxy.recover()
        assert (await resolver.lookup(image)).uid == 3000  # nothing of the stalled read was kept
    finally:
        proxy.stop()
