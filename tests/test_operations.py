"""``mutator serve`` as operators run it: certificate rotation, SIGTERM, JSON logs, the metrics port.

Every test runs the real server process over real TLS against the loopback registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography import x509
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from mutator import logs
from mutator.commands import cli
from mutator.serve import tls
from mutator.serve.certreload import CertReloader
from mutator.serve.tls import self_signed
from tests.support.fixtures import review, with_images
from tests.support.net import wait_for
from tests.support.promql import exported_series
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.registry

PUBLIC = "docker.io/library/memcached:1.6"  # the image named by the captured review


@pytest.fixture
def config(registry, silent_registry, tmp_path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f'registries:\n  "{registry.host}": {{plain_http: true}}\n'
                    f'  "{silent_registry}": {{plain_http: true}}\n')
    return str(path)


def start(config: str, *args: str) -> WebhookProcess:
    return WebhookProcess(config=config, args=("--metrics-listen", "127.0.0.1:0", *args)).start()


def document_for(image: str, uid: str = "op") -> dict[str, Any]:
    document = with_images(review("pod-create-kubectl-run"), {PUBLIC: image})
    document["request"]["uid"] = uid
    return document


def post(pool: urllib3.PoolManager, url: str, document: dict[str, Any], *, mode: str = "enforce",
         query: str = "?timeout=10s") -> urllib3.BaseHTTPResponse:
    return pool.request("POST", f"{url}/mutate/{mode}{query}", body=json.dumps(document).encode(),
                        headers={"Content-Type": "application/json"})


def scrape(webhook: WebhookProcess) -> str:
    """/metrics over the plain-HTTP port: no TLS, no CA."""
    with urllib.request.urlopen(f"{webhook.metrics_url}/metrics", timeout=10) as reply:
        return reply.read().decode()


def sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def log_lines(webhook: WebhookProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in webhook.log.read_text().splitlines() if line.strip()]


@pytest.fixture
def webhooks() -> Iterator[list[WebhookProcess]]:
    started: list[WebhookProcess] = []
    yield started
    for webhook in started:
        webhook.stop()


def test_metrics_port_is_plain_http_with_build_info_and_certificate_expiry(config, webhooks):
    webhook = start(config)
    webhooks.append(webhook)
    text = scrape(webhook)
    assert webhook.metrics_url.startswith("http://127.0.0.1:")
    assert 'nonroot_mutator_build_info{version="' in text
    cert = x509.load_pem_x509_certificate(Path(webhook.cert).read_bytes())
    expiry = sample(text, "nonroot_mutator_tls_certificate_expiry_timestamp_seconds")
    assert expiry == cert.not_valid_after_utc.timestamp()


def swap_certificate(webhook: WebhookProcess, directory: Path) -> str:
    """Write a new pair and rename it over the served files, as a Secret volume update does."""
    cert, key = self_signed(str(directory), ("127.0.0.1", "localhost"), days=90)
    os.replace(cert, webhook.cert)
    os.replace(key, webhook.key)
    return Path(webhook.cert).read_text()


def test_rotated_certificate_is_served_on_new_connections_without_failing_admissions(
        config, webhooks, images, tmp_path):
    webhook = start(config, "--tls-reload-seconds", "0.1")
    webhooks.append(webhook)
    old_pem = Path(webhook.cert).read_text()
    trust = tmp_path / "both.pem"
    document = document_for(images["named-base"])
    done, answered, failures = threading.Event(), [0], []

    def keep_admitting() -> None:
        # Only the old certificate is trusted: were the open keep-alive connection dropped,
        # the reconnect would meet the new certificate and fail.
        trust.write_text(old_pem)
        pool = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=str(trust)),
                                   retries=False, timeout=10)
        while not done.is_set():
            try:
                reply = post(pool, webhook.url, document)
                if reply.status != 200 or json.loads(reply.data)["response"]["allowed"] is not True:
                    failures.append(reply.status)
                answered[0] += 1
            except Exception as exc:
                failures.append(repr(exc))

    client = threading.Thread(target=keep_admitting)
    client.start()
    try:
        wait_for(lambda: answered[0] >= 5, timeout=30, what="admissions before the rotation")
        new_dir = tmp_path / "new"
        new_dir.mkdir()
        new_pem = swap_certificate(webhook, new_dir)
        assert new_pem != old_pem
        served = wait_for(lambda: ssl.get_server_certificate(("127.0.0.1", webhook.port)) == new_pem,
                          timeout=15, what="the new certificate on a new TLS connection")
        assert served
        before = answered[0]
        wait_for(lambda: answered[0] >= before + 5, timeout=30, what="admissions after the rotation")
    finally:
        done.set()
        client.join(timeout=30)
    assert failures == []
    new = x509.load_pem_x509_certificate(new_pem.encode())
    expiry = sample(scrape(webhook), "nonroot_mutator_tls_certificate_expiry_timestamp_seconds")
    assert expiry == new.not_valid_after_utc.timestamp()
    assert any(line.get("msg", "").startswith("serving certificate reloaded") for line in log_lines(webhook))


def test_sigterm_reports_not_ready_answers_everything_in_flight_then_exits_0(
        config, webhooks, silent_registry):
    webhook = start(config)
    webhooks.append(webhook)
    pool = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=webhook.cert),
                               retries=False, timeout=30, maxsize=8)
    in_flight = 5
    # The silent registry never answers: each admission waits until its own deadline (~2.7 s of 3 s).
    slow = [document_for(f"{silent_registry}/slow/app:{n}", uid=f"slow-{n}") for n in range(in_flight)]
    with ThreadPoolExecutor(in_flight) as workers:
        replies = [workers.submit(post, pool, webhook.url, d, query="?timeout=3s") for d in slow]
        wait_for(lambda: sample(scrape(webhook), "nonroot_mutator_inflight_admissions") == in_flight,
                 timeout=10, what="admissions in flight")
        assert pool.request("GET", f"{webhook.url}/readyz").status == 200
        webhook.process.send_signal(signal.SIGTERM)
        wait_for(lambda: pool.request("GET", f"{webhook.url}/readyz").status == 503,
                 timeout=5, what="/readyz to go 503 after SIGTERM")
        assert webhook.process.poll() is None  # still draining
        answers = [future.result(timeout=30) for future in replies]
    assert [a.status for a in answers] == [200] * in_flight
    for answer, document in zip(answers, slow, strict=True):
        response = json.loads(answer.data)["response"]
        assert response["uid"] == document["request"]["uid"]
        assert response["allowed"] is False and "temporary" in response["status"]["message"]
    assert webhook.process.wait(timeout=15) == 0


def test_replicas_answered_from_the_memo_each_log_their_line_and_sigterm_writes_them_all(
        config, webhooks, images):
    webhook = start(config)
    webhooks.append(webhook)
    pool = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=webhook.cert),
                               retries=False, timeout=30)
    replicas = [f"replica-{n}" for n in range(20)]
    answers = [post(pool, webhook.url, document_for(images["named-base"], uid)) for uid in replicas]
    assert [a.status for a in answers] == [200] * len(replicas)
    hits = sample(scrape(webhook), 'nonroot_mutator_cache_lookups_total{cache="decision",result="hit"}')
    assert hits == len(replicas) - 1  # the first decided, every other one answered from the memo
    bodies = [json.loads(a.data) for a in answers]
    assert [b["response"]["uid"] for b in bodies] == replicas
    assert all({**b["response"], "uid": ""} == {**bodies[0]["response"], "uid": ""} for b in bodies)
    webhook.process.send_signal(signal.SIGTERM)  # lines still waiting for their batch are written
    assert webhook.process.wait(timeout=15) == 0
    lines = [line for line in log_lines(webhook) if line.get("kind") == "admission"]
    assert [line["uid"] for line in lines] == replicas
    own = ("time", "uid", "duration_ms")  # what each replica's line has of its own

    def shared(line: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in line.items() if key not in own}

    assert shared(lines[0])["decision"] == "patched" and lines[0]["containers"][0]["uid"] == 1000
    assert all(shared(line) == shared(lines[0]) and line["duration_ms"] > 0 for line in lines[1:])


def test_json_logs_one_line_per_patch_refusal_registry_failure_and_400(config, webhooks, images,
                                                                       registry):
    webhook = start(config)
    webhooks.append(webhook)
    pool = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=webhook.cert),
                               retries=False, timeout=30)
    missing = f"{registry.host}/test/never-pushed:v1"
    assert post(pool, webhook.url, document_for(images["named-base"], "patch-me")).status == 200
    assert post(pool, webhook.url, document_for(images["no-user"], "refuse-me")).status == 200
    assert post(pool, webhook.url, document_for(missing, "missing")).status == 200
    assert post(pool, webhook.url, document_for(images["numeric"], "plain-allow")).status == 200
    secret = "s3cr3t-token-never-logged"
    bad = pool.request("POST", f"{webhook.url}/mutate/warn", body=b"{oops",
                       headers={"Authorization": f"Bearer {secret}"})
    assert bad.status == 400

    lines = wait_for(lambda: [line for line in log_lines(webhook) if line.get("kind") == "bad_request"]
                     and log_lines(webhook), timeout=10, what="the log lines")
    assert all({"time", "level", "msg"} <= set(line) for line in lines)
    admissions = {line["uid"]: line for line in lines if line.get("kind") == "admission"}
    assert "plain-allow" not in admissions  # the warm path logs nothing

    patched = admissions["patch-me"]
    namespace = review("pod-create-kubectl-run")["request"]["namespace"]
    assert patched["decision"] == "patched" and patched["namespace"] == namespace
    assert patched["pod"] and patched["mode"] == "enforce" and patched["duration_ms"] > 0
    [container] = patched["containers"]
    assert container["image"] == images["named-base"] and container["decision"] == "patch"
    assert container["digest"].startswith("sha256:")
    assert (container["user"], container["uid"], container["gid"]) == ("app", 1000, 1000)

    refused = admissions["refuse-me"]
    assert refused["decision"] == "refused" and refused["level"] == "warning"
    assert "sets no USER" in refused["reason"]
    assert refused["containers"][0]["decision"] == "root"

    failures = [line for line in lines if line.get("kind") == "registry_failure"]
    assert [f["image"] for f in failures] == [missing]
    assert failures[0]["temporary"] is False and failures[0]["reason"]
    assert admissions["missing"]["containers"][0]["decision"] == "unresolvable"

    [bad_line] = [line for line in lines if line.get("kind") == "bad_request"]
    assert bad_line["path"] == "/mutate/warn" and bad_line["remote"] == "127.0.0.1"
    assert "not valid JSON" in bad_line["reason"]
    assert secret not in webhook.log.read_text()


def test_text_log_format_switches_back(config, webhooks):
    webhook = start(config, "--log-format", "text")
    webhooks.append(webhook)
    pool = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=webhook.cert), retries=False)
    assert pool.request("POST", f"{webhook.url}/mutate/enforce", body=b"[]").status == 400
    text = wait_for(lambda: "bad request" in webhook.log.read_text() and webhook.log.read_text(),
                    timeout=10, what="the bad request line")
    line = next(line for line in text.splitlines() if "bad request" in line)
    assert not line.startswith("{") and 'path="/mutate/enforce"' in line


def test_scraped_series_are_the_ones_the_dashboard_is_checked_against(config, webhooks, images, registry):
    """The dashboard test reads the metric objects; here the running server's own scrape must agree."""
    webhook = start(config)
    webhooks.append(webhook)
    pool = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=webhook.cert),
                               retries=False, timeout=30)
    for n, image in enumerate((images["named-base"], images["no-user"], f"{registry.host}/test/absent:v1")):
        assert post(pool, webhook.url, document_for(image, f"scrape-{n}")).status == 200
    exported = exported_series()
    scraped = {sample.name for family in text_string_to_metric_families(scrape(webhook))
               for sample in family.samples if sample.name.startswith("nonroot_mutator_")}
    assert {name for name in scraped if not name.endswith("_created")} <= exported.keys()
    for queried in ("nonroot_mutator_admissions_total", "nonroot_mutator_admission_duration_seconds_bucket",
                    "nonroot_mutator_containers_total", "nonroot_mutator_cache_lookups_total",
                    "nonroot_mutator_registry_requests_total", "nonroot_mutator_registry_lookups_total",
                    "nonroot_mutator_registry_request_duration_seconds_bucket",
                    "nonroot_mutator_build_info", "nonroot_mutator_inflight_admissions"):
        assert queried in scraped, queried


def served_certificate(context: ssl.SSLContext) -> x509.Certificate:
    """The certificate a new handshake with *context* presents, in memory (no sockets)."""
    client_context = ssl.create_default_context()
    client_context.check_hostname, client_context.verify_mode = False, ssl.CERT_NONE
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = context.wrap_bio(to_server, to_client, server_side=True)
    client = client_context.wrap_bio(to_client, to_server, server_hostname="127.0.0.1")
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        peer = client.getpeercert(binary_form=True) if client.version() else None
        if peer:
            return x509.load_der_x509_certificate(peer)
    raise AssertionError("no handshake")


def expiry_gauge() -> float | None:
    return REGISTRY.get_sample_value("nonroot_mutator_tls_certificate_expiry_timestamp_seconds")


def test_a_half_rotated_pair_keeps_the_old_certificate_until_the_key_arrives(tmp_path):
    """cert-manager writes both files, but a check may land between the two writes."""
    served, fresh = tmp_path / "served", tmp_path / "fresh"
    served.mkdir()
    fresh.mkdir()
    cert, key = self_signed(str(served), ("127.0.0.1",), days=10)
    context = tls.server_context(cert, key)
    reloader = CertReloader(context, cert_file=cert, key_file=key)
    old = served_certificate(context)
    assert reloader.check() is False  # nothing changed
    assert expiry_gauge() == old.not_valid_after_utc.timestamp()

    new_cert, new_key = self_signed(str(fresh), ("127.0.0.1",), days=20)
    os.replace(new_cert, cert)  # the certificate first: it does not match the old key
    assert reloader.check() is False and reloader.reloads == 0
    assert served_certificate(context) == old and expiry_gauge() == old.not_valid_after_utc.timestamp()

    os.replace(new_key, key)
    assert reloader.check() is True and reloader.reloads == 1
    new = served_certificate(context)
    assert new != old and new == x509.load_pem_x509_certificate(Path(cert).read_bytes())
    assert expiry_gauge() == new.not_valid_after_utc.timestamp()


def test_serve_flags_and_files_are_checked_before_serving(tmp_path, capsys):
    missing = str(tmp_path / "absent.pem")
    assert cli.main(["serve", "--tls-cert", missing, "--tls-key", missing]) == cli.EXIT_BAD_INPUT
    assert f"--tls-cert {missing}: no such file" in capsys.readouterr().err
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["serve", "--dev", "--tls-reload-seconds", bad])
        assert exited.value.code == 2
        assert "positive number of seconds" in capsys.readouterr().err


@pytest.mark.parametrize("formatter", [logs.JsonFormatter(), logs.TextFormatter()], ids=["json", "text"])
def test_a_hostile_name_never_loses_the_line(formatter):
    """Names come from the request: a lone surrogate is not valid UTF-8, yet the line is written."""
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "admission refused", (), None)
    record.event = {"pod": "web-\udcff", "namespace": "ns", "containers": [{"image": "x\ud800"}]}
    line = formatter.format(record)
    assert "\\udcff" in line and "\\ud800" in line
    if isinstance(formatter, logs.JsonFormatter):
        assert json.loads(line)["pod"] == "web-\udcff"


def test_a_busy_metrics_port_is_named_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mutator", "serve", "--dev", "--listen", "127.0.0.1:0",
             "--metrics-listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == cli.EXIT_CANNOT_SERVE
    [said] = result.stderr.strip().splitlines()
    assert said.startswith(f"mutator serve: cannot listen on 127.0.0.1:{port}: ")
    assert said.endswith("address already in use")
    assert "listening on" not in result.stdout
