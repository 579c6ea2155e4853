"""``mutator serve`` reading pull secrets from an API server that never answers.

Readiness must say so, and an admission naming a pull secret must still be answered, in time,
with the next credential source (here: anonymous): an unreachable cluster is never a crash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import urllib3

from mutator.decide import admission
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def webhook(registry, silent_registry, tmp_path_factory) -> Iterator[WebhookProcess]:
    directory = tmp_path_factory.mktemp("silent-cluster")
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "silent", "cluster": {"server": f"https://{silent_registry}",
                                                    "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "silent", "context": {"cluster": "silent", "user": "u"}}],
        "current-context": "silent",
    }))
    config = directory / "config.yaml"
    config.write_text(json.dumps({"registries": {registry.host: {"plain_http": True}},
                                  "kubeconfig": str(kubeconfig)}))
    process = WebhookProcess(config=str(config)).start()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def http(webhook: WebhookProcess) -> urllib3.PoolManager:
    return webhook.https()


def test_readiness_waits_for_the_first_lists(http, webhook):
    ready = http.request("GET", f"{webhook.url}/readyz")
    assert (ready.status, ready.data) == (503, b"reading pull secrets\n")
    assert http.request("GET", f"{webhook.url}/healthz").status == 200


def test_a_pull_secret_that_cannot_be_read_falls_through_to_the_next_source(http, webhook, images):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"},
           "spec": {"containers": [{"name": "app", "image": images["named-base"]}],
                    "imagePullSecrets": [{"name": "regcred"}]}}
    started = time.monotonic()
    reply = http.request("POST", f"{webhook.url}/mutate/enforce?timeout=10s",
                         body=json.dumps(admission.review_for_pod(pod)).encode(),
                         headers={"Content-Type": "application/json"})
    elapsed = time.monotonic() - started
    response = json.loads(reply.data)["response"]
    assert reply.status == 200 and response["allowed"] is True and "patch" in response
    assert elapsed < 9, elapsed  # the Secret's GET gave up well inside the admission's deadline
    assert "cannot read Secret team-a/regcred: TimeoutError" in webhook.log.read_text()
