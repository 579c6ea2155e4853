"""``mutator review`` of what developers apply: every kind, lists, streams, directories, --fix.

Runs the command as a process against images in the loopback registry.
"""

from __future__ import annotations

import base64
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.fixtures import with_images
from tests.support.images import layer, passwd
from tests.test_cli import mutator

pytestmark = pytest.mark.registry

KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job",
         "CronJob", "PodTemplate")


def manifest(kind: str, name: str, image: str, **container: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "app", "image": image, **container}]}
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    body = {"Pod": {"spec": spec}, "PodTemplate": {"template": template},
            "CronJob": {"spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}},
            }.get(kind, {"spec": {"template": template}})
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, **body}


def rows(stdout: str) -> list[list[str]]:
    """The table's rows, split on runs of two or more spaces."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["WORKLOAD", "CONTAINER", "IMAGE", "USER", "VERDICT", "UID/GID", "REASON"]
    return [re.split(r"\s{2,}", line, maxsplit=6) for line in lines[1:]]


def test_every_kind_in_one_stream_with_a_list_and_a_skipped_kind(images, registry_config):
    documents = [manifest(kind, kind.lower(), images["named-upper"]) for kind in KINDS]
    documents.append({"apiVersion": "v1", "kind": "List", "items": [
        manifest("Deployment", "listed", images["numeric"]),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
    ]})
    documents.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}})
    result = mutator("review", "-", stdin=yaml.safe_dump_all(documents), config=registry_config)
    assert result.returncode == 0, result.stderr
    table = rows(result.stdout)
    for kind, row in zip(KINDS, table, strict=False):
        assert row == [f"{kind.lower()}/{kind.lower()}", "app", images["named-upper"], "node", "patch",
                       "1001:1002", "USER node; Dockerfile: USER 1001:1002"]
    assert table[len(KINDS)][:6] == ["deployment/listed", "app", images["numeric"], "1234", "fine", "1234"]
    assert table[-2] == ["configmap/settings", "-", "-", "-", "skipped", "-", "kind ConfigMap makes no Pods"]
    assert table[-1][0] == "service/web" and table[-1][4] == "skipped"


def test_a_root_image_is_refused_with_exit_1_and_the_dockerfile_line(images, registry_config):
    text = yaml.safe_dump_all([manifest("Deployment", "web", images["no-user"]),
                               manifest("Job", "migrate", images["root-name"])])
    result = mutator("review", "-", stdin=text, config=registry_config)
    assert result.returncode == 1
    web, migrate = rows(result.stdout)
    assert web[4:] == ["refused", "0:0", "no USER; Dockerfile: USER 1000:1000"]
    assert migrate[4:] == ["refused", "0:0", "USER 'toor' is uid 0; Dockerfile: USER 1000:1000"]
    assert mutator("review", "--mode", "warn", "-", stdin=text, config=registry_config).returncode == 0


def test_a_directory_is_read_recursively(images, registry_config, tmp_path):
    (tmp_path / "apps" / "web").mkdir(parents=True)
    (tmp_path / "apps" / "web" / "deploy.yml").write_text(
        yaml.safe_dump(manifest("Deployment", "web", images["named-base"])))
    (tmp_path / "apps" / "job.json").write_text(json.dumps(manifest("Job", "job", images["numeric"])))
    (tmp_path / "apps" / "README.md").write_text("# not a manifest: [")
    result = mutator("review", "-o", "json", str(tmp_path), config=registry_config)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(w["workload"], w["source"]) for w in data["workloads"]] == [
        ("job/job", str(tmp_path / "apps" / "job.json")),
        ("deployment/web", str(tmp_path / "apps" / "web" / "deploy.yml")),
    ]
    web = data["workloads"][1]["containers"][0]
    assert (web["verdict"], web["uid"], web["gid"], web["fix"]) == ("patch", 1000, 1000, "USER 1000:1000")
    assert web["digest"].startswith("sha256:")
    in_yaml = mutator("review", "-o", "yaml", str(tmp_path), config=registry_config)
    assert in_yaml.returncode == 0, in_yaml.stderr
    as_yaml = yaml.safe_load(in_yaml.stdout)
    assert as_yaml == data


def test_fix_keeps_comments_and_order_and_the_fixed_manifests_review_as_fine(images, registry_config):
    text = textwrap.dedent(f"""\
        # the team's web tier
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web  # public name
        spec:
          template:
            spec:
              containers:
                - name: app
                  image: "{images['name-group']}"
                  securityContext:
                    allowPrivilegeEscalation: false  # keep
                - name: side
                  image: {images['named-upper']}
        ---
        kind: ConfigMap
        apiVersion: v1
        metadata: {{name: settings}}
        """)
    fixed = mutator("review", "--fix", "-", stdin=text, config=registry_config)
    assert fixed.returncode == 0, fixed.stderr
    assert "deployment/web" in fixed.stderr  # the table goes to stderr, the manifests to stdout
    out = fixed.stdout
    for kept in ("# the team's web tier", "name: web  # public name",
                 "allowPrivilegeEscalation: false  # keep",
                 f'image: "{images["name-group"]}"', "kind: ConfigMap\napiVersion: v1"):
        assert kept in out
    app, side = yaml.safe_load_all(out).__next__()["spec"]["template"]["spec"]["containers"]
    assert app["securityContext"] == {"allowPrivilegeEscalation": False, "runAsUser": 1000, "runAsGroup": 50}
    assert side["securityContext"] == {"runAsUser": 1001, "runAsGroup": 1002}
    again = mutator("review", "-o", "json", "-", stdin=out, config=registry_config)
    assert again.returncode == 0
    verdicts = [c["verdict"] for w in json.loads(again.stdout)["workloads"] for c in w["containers"]]
    assert verdicts == ["fine", "fine"]


@pytest.mark.parametrize(("data", "message"), [
    (b"kind: Pod\nmetadata: {name: caf\xe9}\n", "not UTF-8 text"),
    (b"a: [", "not valid YAML"),
    (b"kind: Deployment\nspec: {template: {}}\n", "has no spec.template.spec object"),
    (b"- 1\n- 2\n", "a manifest must be a mapping"),
    (b"kind: List\nitems: {}\n", "List.items must be a list"),
    (b"# nothing\n", "no manifests in the input"),
    (b"x: " + b"y" * (3 * 1024 * 1024) + b"\n", "larger than 3145728 bytes"),
])
def test_bad_input_is_a_clear_error_with_exit_2(data, message, tmp_path, registry_config):
    path = tmp_path / "in.yaml"
    path.write_bytes(data)
    result = mutator("review", str(path), config=registry_config)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"mutator review: {path}") or "no manifests" in result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_file_and_empty_directory_exit_2(tmp_path, registry_config):
    missing = mutator("review", str(tmp_path / "nope.yaml"), config=registry_config)
    assert missing.returncode == 2 and "No such file" in missing.stderr
    empty = mutator("review", str(tmp_path), config=registry_config)
    assert empty.returncode == 2 and "no *.yaml, *.yml or *.json files" in empty.stderr


@pytest.fixture(scope="module")
def memcached(pusher) -> str:
    """Shaped like the real memcached image: USER memcache, uid 11211 in its /etc/passwd."""
    return pusher.image("test/memcached", "1.6", user="memcache",
                        layers=[layer({"etc/passwd": passwd(("memcache", 11211, 11211))})]).reference


def test_the_readme_example_shows_a_patch(memcached, registry_config, tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "review-named-user.json"
    document = json.loads(example.read_text())
    public = "docker.io/library/memcached:1.6"  # USER memcache: a named user, so the example is patched
    assert document["request"]["object"]["spec"]["containers"][0]["image"] == public
    path = tmp_path / "example.json"
    path.write_text(json.dumps(with_images(document, {public: memcached})))
    result = mutator("review", str(path), config=registry_config)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)["response"]
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops[0]["value"] == {"runAsUser": 11211, "runAsGroup": 11211, "runAsNonRoot": True}
