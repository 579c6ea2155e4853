"""Bad admission input, generated and mutated from the reviews a real API server sent.

Every answer must be an HTTP 200 carrying a valid AdmissionReview for the same
uid, or an HTTP 400 with a reason: never a 500, never a hang, never a
traceback. The same documents go through the pure path in-process
(``admission.decode`` → ``pipeline.handle``), through ``mutator serve`` over real
HTTPS, and through ``mutator review``. Example counts are bounded so that the
whole module stays within about a minute.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import gzip
import io
import json
import socket
import ssl
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutator.commands import cli
from mutator.decide import admission
from mutator.decide.images import ImageFailure, ImageUser
from mutator.decide.passwd import MAX_ID
from mutator.decide.policy import Mode
from mutator.errors import BadReview
from mutator.serve import pipeline
from tests.support.fixtures import ADMISSION, review
from tests.support.net import free_port
from tests.support.webhook import WebhookProcess

SEEDS = [review(path.stem) for path in sorted(ADMISSION.glob("*.json"))]
FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
NAMES = st.text(min_size=0, max_size=70) | st.sampled_from(["app", "app", "\u00e9t\u00e9", "\ud800", ""])


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A captured review with 1-4 random edits: a value replaced, a key dropped, a node duplicated."""
    document: Any = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        parent: Any = None
        key: Any = None
        node = document
        while isinstance(node, dict | list) and node and draw(st.integers(0, 5)) > 0:
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            parent, node = node, node[key]
        action = draw(st.sampled_from(["replace", "delete", "wrap", "grow"]))
        if parent is None:
            document = draw(JSON) if action == "replace" else [document] if action == "wrap" else document
        elif action == "replace":
            parent[key] = draw(JSON)
        elif action == "delete":
            del parent[key]
        elif action == "wrap":
            parent[key] = [node] if draw(st.booleans()) else {"x": node}
        elif isinstance(node, list) and node:
            node.extend(copy.deepcopy(node[:1]) * draw(st.integers(1, 3)))
    return document


@st.composite
def crowded(draw: st.DrawFn) -> dict[str, Any]:
    """A pod CREATE with unicode, empty and duplicate container names and odd security contexts."""
    document = copy.deepcopy(review("pod-create-kubectl-run"))
    spec = document["request"]["object"]["spec"]
    context = st.none() | st.fixed_dictionaries({}, optional={
        "runAsUser": st.integers(-5, 2**32) | JSON, "runAsGroup": st.integers(0, 2**31) | JSON,
        "runAsNonRoot": st.booleans() | JSON})
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        spec[kind] = [
            {"name": draw(NAMES), "image": draw(st.sampled_from(["named", "root", "ghost", "down", ""])),
             **({"securityContext": sc} if (sc := draw(context)) is not None else {})}
            for _ in range(draw(st.integers(0 if kind != "containers" else 1, 6)))
        ]
    spec["securityContext"] = draw(context)
    return document


DOCUMENTS = mutated() | crowded()


class TableResolver:
    """A fake resolver for the pure path: each image string maps to a fixed kind of answer."""

    ANSWERS = (
        ImageUser("x", "r", "sha256:1", "app", uid=1000, gid=1000),
        ImageUser("x", "r", "sha256:2", "", uid=0, gid=0),
        ImageUser("x", "r", "sha256:3", "ghost", uid=None, gid=None, problem="user 'ghost' not found"),
        ImageUser("x", "r", "sha256:4", "top", uid=MAX_ID, gid=None),
    )

    async def resolve(self, images: Any, *, deadline: float, pull: Any = None) -> dict[str, Any]:
        table = {"named": 0, "root": 1, "ghost": 2}
        answers: dict[str, Any] = {}
        for image in images:
            if image == "down":
                answers[image] = ImageFailure(image, "cannot reach the registry", temporary=True)
            else:
                answers[image] = self.ANSWERS[table.get(image, sum(map(ord, image)) % 4)]
        return answers


ANNOTATION_POINTER = "/metadata/annotations/nonroot-mutator.dev~1run-as"


def container_ops(body: bytes) -> list[Any]:
    """The patch's operations on containers (the run-as annotation aside)."""
    ops = json.loads(base64.b64decode(json.loads(body)["response"]["patch"]))
    return [op for op in ops if not op["path"].startswith("/metadata")]


def check_answer(status: int, body: bytes, sent: Any) -> None:
    """The contract: 200 + a valid AdmissionReview for the same uid, or 400 + a reason."""
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text and "Internal Server Error" not in text
    reply = json.loads(body)
    if status == 400:
        assert set(reply) == {"error"} and isinstance(reply["error"], str) and reply["error"]
        return
    assert status == 200, (status, text[:500])
    assert reply["apiVersion"] == admission.API_VERSION and reply["kind"] == admission.KIND
    response = reply["response"]
    assert response["uid"] == sent["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    assert all(isinstance(w, str) and len(w) <= 120 for w in response.get("warnings", []))
    if not response["allowed"]:
        assert "patch" not in response and response["status"]["message"]
        return
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        for op in ops:
            assert op["op"] == "add"
            value = op["value"]
            if op["path"].startswith("/metadata"):  # the run-as evidence annotation, never a uid
                assert op["path"] in ("/metadata", "/metadata/annotations", ANNOTATION_POINTER), op
                continue
            uid = value.get("runAsUser") if isinstance(value, dict) else (
                value if op["path"].endswith("/runAsUser") else 1)
            assert type(uid) is int and 1 <= uid <= MAX_ID
        jsonpatch.apply_patch(sent["request"]["object"], ops)  # applies to what was sent


def pure(document: Any, mode: Mode, raw: bytes | None = None) -> tuple[int, bytes]:
    """The server's path without the server: decode, handle, serialise, as mutate() does."""
    body = raw if raw is not None else json.dumps(document).encode("utf-8", "surrogatepass")

    async def run() -> tuple[int, bytes]:
        try:
            review_ = admission.decode(body)
            outcome = await pipeline.handle(review_, mode=mode, resolver=TableResolver(),  # type: ignore[arg-type]
                                           deadline=pipeline.deadline_for(10))
        except BadReview as exc:
            return 400, json.dumps({"error": str(exc)}).encode()
        return 200, json.dumps(outcome.response).encode()

    return asyncio.run(run())


@FUZZ
@given(document=DOCUMENTS, mode=st.sampled_from(list(Mode)))
def test_pure_path_answers_every_mutation(document, mode):
    status, body = pure(document, mode)
    check_answer(status, body, document)


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[]", b"42", b'"AdmissionReview"', b"\xff\xfe\x00", b"{" * 5, b"[" * 100_000,
     b'{"a":' * 100_000, b"1" * 10_000, b'{"kind": NaN}'],
    ids=["empty", "null", "list", "number", "string", "binary", "open", "deep-list", "deep-object",
         "huge-int", "nan"],
)
def test_pure_path_refuses_bodies_that_are_not_objects(raw):
    status, body = pure(None, Mode.ENFORCE, raw=raw)
    assert status == 400, body


def test_pure_path_refuses_every_truncation():
    whole = json.dumps(review("pod-create-multi")).encode()
    for cut in range(0, len(whole), max(1, len(whole) // 200)):
        status, _ = pure(None, Mode.ENFORCE, raw=whole[:cut])
        assert status == 400, cut


def test_pure_path_ten_thousand_containers():
    document = copy.deepcopy(review("pod-create-kubectl-run"))
    document["request"]["object"]["spec"]["containers"] = [
        {"name": "\u540d" * (i % 5) or "dup", "image": "named"} for i in range(10_000)]
    started = time.perf_counter()
    status, body = pure(document, Mode.ENFORCE)
    assert time.perf_counter() - started < 10
    check_answer(status, body, document)
    assert len(container_ops(body)) == 10_000


# ---------------------------------------------------------------------------------------- over HTTPS

@dataclass
class Served:
    process: WebhookProcess
    http: urllib3.PoolManager
    images: dict[str, str]  # kind of answer → loopback image


@pytest.fixture(scope="module")
def served(registry, images, tmp_path_factory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused, at once
    config.write_text(f'registries:\n  "{registry.host}": {{plain_http: true}}\n'
                      f'  "{closed}": {{plain_http: true}}\n')
    process = WebhookProcess(config=str(config)).start()
    http = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=process.cert), retries=False,
                               timeout=urllib3.Timeout(connect=5, read=20))
    table = {"named": images["named-base"], "root": images["no-user"], "ghost": images["missing-name"],
             "down": f"{closed}/gone:1"}
    yield Served(process, http, table)
    log = process.log.read_text()
    assert process.stop() == 0
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]


def loopback(document: Any, table: dict[str, str]) -> Any:
    """Every string image becomes a loopback image, so no name ever leaves the machine."""
    if isinstance(document, dict):
        return {k: (table.get(v, table["named"]) if k == "image" and isinstance(v, str)
                    else loopback(v, table)) for k, v in document.items()}
    if isinstance(document, list):
        return [loopback(v, table) for v in document]
    return document


def post(served: Served, body: bytes, *, mode: str = "enforce", headers: dict[str, str] | None = None
         ) -> tuple[int, bytes, float]:
    process, http = served.process, served.http
    started = time.perf_counter()
    reply = http.request("POST", f"{process.url}/mutate/{mode}?timeout=5s", body=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    return reply.status, reply.data, time.perf_counter() - started


@pytest.mark.registry
@settings(FUZZ, max_examples=300)
@given(document=DOCUMENTS, mode=st.sampled_from(list(Mode)))
def test_https_answers_every_mutation(served, document, mode):
    document = loopback(document, served.images)
    status, body, elapsed = post(served, json.dumps(document).encode("utf-8", "surrogatepass"),
                                 mode=mode.value)
    check_answer(status, body, document)
    assert elapsed < 6


@pytest.mark.registry
@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"", "not valid JSON"), (b"null", "JSON object"), (b"[]", "JSON object"),
     (b"\xff\xfe\x00", "not valid JSON"), (b"[" * 100_000, "nested too deeply"),
     (b'{"a":' * 100_000, "nested too deeply"), (b"1" * 10_000, "not valid JSON")],
)
def test_https_refuses_bodies_that_are_not_reviews(served, raw, reason):
    status, body, _ = post(served, raw)
    assert status == 400 and reason in json.loads(body)["error"]


@pytest.mark.registry
def test_https_refuses_truncated_bodies(served):
    whole = json.dumps(loopback(review("pod-create-multi"), served.images)).encode()
    for cut in range(1, len(whole), len(whole) // 25):
        status, body, _ = post(served, whole[:cut])
        assert status == 400 and "not valid JSON" in json.loads(body)["error"]


@pytest.mark.registry
def test_https_ten_thousand_containers_with_unicode_and_duplicate_names(served):
    document = loopback(review("pod-create-kubectl-run"), served.images)
    image = served.images["named"]
    document["request"]["object"]["spec"]["containers"] = [
        {"name": ["app", "\u00e9t\u00e9", "\u540d\u524d", "app"][i % 4], "image": image}
        for i in range(10_000)]
    status, body, elapsed = post(served, json.dumps(document).encode())
    check_answer(status, body, document)
    assert elapsed < 6
    assert len(container_ops(body)) == 10_000


@pytest.mark.registry
@pytest.mark.parametrize("content_type", ["text/plain", "application/yaml", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded"])
def test_https_refuses_wrong_content_types(served, content_type):
    body = json.dumps(loopback(review("pod-create-kubectl-run"), served.images)).encode()
    status, reply, _ = post(served, body, headers={"Content-Type": content_type})
    assert status == 400 and "is not JSON: send application/json" in json.loads(reply)["error"]
    status, _, _ = post(served, body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200


@pytest.mark.registry
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_https_inflates_a_compressed_body(served, encoding):
    # The API server may compress; aiohttp inflates, and the 3 MiB bound applies to what it inflates.
    document = loopback(review("pod-create-kubectl-run"), served.images)
    raw = json.dumps(document).encode()
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    status, reply, _ = post(served, body, headers={"Content-Encoding": encoding})
    check_answer(status, reply, document)
    assert status == 200 and json.loads(reply)["response"]["patch"]


@pytest.mark.registry
def test_https_refuses_a_gzip_bomb_within_the_body_bound(served):
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as handle:
        handle.write(b'{"kind": "AdmissionReview", "pad": "')
        for _ in range(64):  # 64 MiB inflated from about 64 KiB
            handle.write(b" " * (1024 * 1024))
        handle.write(b'"}')
    assert len(buffer.getvalue()) < 200_000
    status, reply, elapsed = post(served, buffer.getvalue(), headers={"Content-Encoding": "gzip"})
    assert status == 400 and "larger than 3145728 bytes" in json.loads(reply)["error"]
    assert elapsed < 5


@pytest.mark.registry
def test_https_refuses_a_corrupt_gzip_body(served):
    status, reply, _ = post(served, b"\x1f\x8b\x08\x00garbage" * 10, headers={"Content-Encoding": "gzip"})
    assert status == 400
    reason = json.loads(reply)["error"]
    assert reason == "request body could not be read: Can not decode content-encoding: gzip"


@pytest.mark.registry
def test_https_body_limit_is_exact(served):
    # The API server's own limit is 3 MiB; a review of exactly that size is read, one byte more is not.
    document = json.dumps(loopback(review("pod-create-kubectl-run"), served.images)).encode()
    exact = document[:-1] + b" " * (admission.MAX_BODY_BYTES - len(document)) + b"}"
    assert len(exact) == admission.MAX_BODY_BYTES
    status, _, _ = post(served, exact)
    assert status == 200
    status, reply, _ = post(served, exact[:-1] + b" }")
    assert status == 400 and "larger than" in json.loads(reply)["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bound holds on the stream too
        yield exact[:-1]
        yield b" }"

    process, http = served.process, served.http
    reply_ = http.request("POST", f"{process.url}/mutate/enforce", body=chunks(), chunked=True,
                          headers={"Content-Type": "application/json"})
    assert reply_.status == 400 and "larger than" in json.loads(reply_.data)["error"]


@pytest.mark.registry
def test_https_survives_a_client_that_hangs_up_mid_body(served):
    process = served.process
    host, port = process.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=process.cert)
    for _ in range(5):
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"POST /mutate/enforce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100000\r\n\r\n{\"kind\": \"Adm")
    body = json.dumps(loopback(review("pod-create-kubectl-run"), served.images)).encode()
    status, _, _ = post(served, body)
    assert status == 200


# ------------------------------------------------------------------------------------- mutator review

@pytest.mark.registry
@settings(FUZZ, max_examples=60)
@given(document=DOCUMENTS, mode=st.sampled_from(list(Mode)))
def test_review_answers_every_mutation(served, registry_config, tmp_path_factory, document, mode):
    """``mutator review`` in-process: the AdmissionReview printed with exit 0/1, or one line and exit 2."""
    document = loopback(document, served.images)
    path = Path(tmp_path_factory.mktemp("review")) / "review.json"
    path.write_bytes(json.dumps(document).encode("utf-8", "surrogatepass"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["review", "--config", registry_config, "--mode", mode.value, "-o", "json",
                         str(path)])
    assert "Traceback" not in err.getvalue()
    if code == cli.EXIT_BAD_INPUT:
        assert out.getvalue() == "" and err.getvalue().startswith("mutator review:")
        assert len(err.getvalue().strip().splitlines()) == 1
        return
    assert code in (cli.EXIT_OK, cli.EXIT_REFUSED), err.getvalue()
    reply = json.loads(out.getvalue())
    if "response" not in reply:  # no longer an AdmissionReview: reviewed as a manifest
        verdicts = [c["verdict"] for w in reply["workloads"] for c in w["containers"]]
        assert (code == cli.EXIT_REFUSED) is ("refused" in verdicts)
        return
    assert reply["response"]["allowed"] is (code == cli.EXIT_OK)
    if isinstance(document, dict) and document.get("kind") == "AdmissionReview":
        check_answer(200, out.getvalue().encode(), document)


@pytest.mark.parametrize("odd", [["x"], {"n": 1}, 7, None, True])
def test_ephemeral_update_with_odd_old_names(odd):
    """oldObject's ephemeral containers are only compared by name; a name of any type is no crash."""
    document = copy.deepcopy(review("pod-ephemeralcontainers-update"))
    old = document["request"]["oldObject"]
    holder = old.get("spec", old)
    holder["ephemeralContainers"] = [{"name": odd, "image": "x"}, "not-a-container"]
    status, body = pure(document, Mode.ENFORCE)
    check_answer(status, body, document)


@pytest.mark.parametrize("mode", list(Mode))
def test_a_bug_while_deciding_is_answered_by_the_modes_failure_policy(mode, monkeypatch):
    """Not a 500 with a traceback: enforce refuses (as failurePolicy Fail would), warn/audit allow."""
    from aiohttp.test_utils import TestClient, TestServer

    from mutator.config import Config
    from mutator.serve import server

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(pipeline, "handle", broken)
    document = review("pod-create-kubectl-run")

    async def run() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(server.make_app(Config()))) as client:
            reply = await client.post(f"/mutate/{mode.value}", json=document)
            return reply.status, await reply.json()

    status, reply = asyncio.run(run())
    assert status == 200 and reply["response"]["uid"] == document["request"]["uid"]
    said = "nonroot-mutator could not decide on this pod (internal error, logged); retry"
    if mode is Mode.ENFORCE:
        assert reply["response"]["allowed"] is False and reply["response"]["status"]["message"] == said
    else:
        assert reply["response"]["allowed"] is True and reply["response"]["warnings"] == [said]
    assert "Traceback" not in json.dumps(reply) and "a bug" not in json.dumps(reply)
