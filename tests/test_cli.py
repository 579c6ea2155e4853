"""``mutator resolve`` and ``mutator review`` as a developer runs them, against the loopback registry."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import yaml

from tests.support.fixtures import review, with_images

pytestmark = pytest.mark.registry


def mutator(*args: str, stdin: str | None = None, config: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mutator", args[0]]
    if config:
        command += ["--config", config]
    command += args[1:]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)


def test_resolve_prints_one_json_object_per_image(images, registry_config):
    result = mutator("resolve", images["named-upper"], images["numeric"], images["no-user"],
                     config=registry_config)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["image"], r["user"], r["uid"], r["gid"], r["runs_as_root"]) for r in lines] == [
        (images["named-upper"], "node", 1001, 1002, False),
        (images["numeric"], "1234", 1234, None, False),
        (images["no-user"], "", 0, 0, True),
    ]
    assert all(r["digest"].startswith("sha256:") for r in lines)


def test_resolve_exits_1_when_any_image_is_unresolved(images, registry_config):
    result = mutator("resolve", images["named-base"], images["missing-name"], config=registry_config)
    assert result.returncode == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["uid"] == 1000
    assert second["uid"] is None and "user 'ghost' not found" in second["error"]


def test_resolve_platform_flag(images, registry_config):
    result = mutator("resolve", "--platform", "linux/arm64/v8", images["index"], config=registry_config)
    assert result.returncode == 0 and json.loads(result.stdout)["uid"] == 2200


def test_review_of_an_admission_review_file(images, registry_config, tmp_path):
    path = tmp_path / "review.json"
    path.write_text(json.dumps(with_images(review("pod-create-kubectl-run"),
                                           {"docker.io/library/memcached:1.6": images["named-base"]})))
    result = mutator("review", str(path), config=registry_config)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)["response"]
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops[0] == {"op": "add", "path": "/spec/containers/0/securityContext",
                      "value": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}}
    assert [op["path"] for op in ops[1:]] == ["/metadata/annotations"]  # the Pod had none


def test_review_of_a_bare_pod_yaml_on_stdin(images, registry_config):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "web", "image": images["no-user"]}]}}
    text = yaml.safe_dump(pod)
    refused = mutator("review", "-o", "json", "-", stdin=text, config=registry_config)
    assert refused.returncode == 1
    (container,) = json.loads(refused.stdout)["workloads"][0]["containers"]
    assert (container["verdict"], container["detail"]) == ("refused", "no USER")
    warned = mutator("review", "--mode", "warn", "-o", "json", "-", stdin=text, config=registry_config)
    assert warned.returncode == 0
    assert json.loads(warned.stdout)["workloads"][0]["containers"][0]["verdict"] == "warned"


@pytest.mark.parametrize("text", ["{not yaml: [", "kind: Deployment\n", "- a\n"])
def test_review_of_bad_input_exits_2(text, registry_config):
    result = mutator("review", "-", stdin=text, config=registry_config)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("mutator review:")


def test_review_of_a_malformed_admission_review_exits_2(registry_config):
    document = review("pod-create-multi")
    del document["request"]["uid"]
    result = mutator("review", "-", stdin=json.dumps(document), config=registry_config)
    assert result.returncode == 2 and "request.uid is missing" in result.stderr


def test_bad_config_is_reported_not_a_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("registries: {r: {plain_http: true, insecure: 1}}\n")
    result = mutator("resolve", "x", config=str(path))
    assert result.returncode == 2
    assert "unknown keys ['registries.r.insecure']" in result.stderr and "Traceback" not in result.stderr


def test_serve_requires_a_certificate():
    result = mutator("serve", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "--tls-cert and --tls-key are required" in result.stderr


def test_a_server_with_no_cluster_does_not_load_the_cluster_client():
    # kubernetes-asyncio's generated client is ~38 MB of RSS: loaded only when a cluster is configured
    code = ("import sys, mutator.serve.server, mutator.commands.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('kubernetes_asyncio')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip() == "[]"
