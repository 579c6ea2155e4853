"""``mutator review`` on what a developer really has: unreachable images, invalid containers,
files that are not Kubernetes objects, flow-style YAML, an AdmissionReview with manifest flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mutator.commands import cli
from tests.support.fixtures import review, with_images
from tests.test_cli_edges import one_line
from tests.test_cli_first_hour import mutator

UNREACHABLE = "127.0.0.1:1/app:v1"  # port 1 on loopback: refused at once


def _pod(tmp_path: Path, containers: str, name: str = "pod.yaml") -> str:
    path = tmp_path / name
    path.write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{containers}")
    return str(path)


def _rows(table: str) -> dict[str, list[str]]:
    """CONTAINER → the table's cells of its row (split on the column gaps)."""
    lines = table.strip().splitlines()[1:]
    return {cells[1]: cells for cells in ([c for c in line.split("  ") if c.strip()] for line in lines)}


def test_an_unreachable_registry_is_unavailable_and_temporary_and_stderr_stays_quiet(tmp_path):
    path = _pod(tmp_path, f"  - {{name: web, image: '{UNREACHABLE}'}}\n")
    result = mutator("review", path)
    assert result.returncode == cli.EXIT_REFUSED
    (row,) = _rows(result.stdout).values()
    assert row[4].strip() == "unavailable"
    assert row[-1].strip().startswith("temporary: cannot reach 127.0.0.1:1")
    assert result.stderr == ""
    verbose = mutator("review", path, "-v")
    assert "registry lookup failed" in verbose.stderr


def test_containers_the_api_server_rejects_are_invalid_in_every_mode(tmp_path):
    path = _pod(tmp_path, "  - {name: negative, image: x, securityContext: {runAsUser: -5}}\n"
                          "  - {name: group, image: x,"
                          " securityContext: {runAsUser: 5, runAsGroup: 3000000000}}\n"
                          "  - {name: imageless}\n")
    for mode in ("enforce", "audit"):
        result = mutator("review", "--mode", mode, "-o", "json", path)
        assert result.returncode == cli.EXIT_REFUSED, result.stderr
        containers = json.loads(result.stdout)["workloads"][0]["containers"]
        assert [(c["container"], c["verdict"]) for c in containers] == [
            ("negative", "invalid"), ("group", "invalid"), ("imageless", "invalid")]
        assert "runAsUser -5 is not an id" in containers[0]["detail"]
        assert "runAsGroup 3000000000 is not an id" in containers[1]["detail"]
        assert containers[2]["detail"] == "no image: the API server requires one"


def test_a_file_that_is_not_a_kubernetes_object_is_named_in_its_row(tmp_path):
    (tmp_path / "values.yaml").write_text("replicas: 3\n")
    result = mutator("review", str(tmp_path))
    assert result.returncode == cli.EXIT_OK, result.stderr
    assert f"?/? ({tmp_path / 'values.yaml'})" in result.stdout
    assert "not a Kubernetes object (no kind)" in result.stdout


@pytest.mark.parametrize(("text", "said"), [("[1, 2, 3]\n", "got a list"), ("just words\n", "got a string"),
                                            ("42\n", "got a number")])
def test_a_document_that_is_not_a_mapping_is_named_by_its_yaml_type(tmp_path, text, said):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    one_line(mutator("review", str(path)), cli.EXIT_BAD_INPUT,
             f"{path}: a manifest must be a mapping, {said}")


def test_a_yaml_error_names_the_file_not_a_unicode_string(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [\n")
    line = one_line(mutator("review", str(path)), cli.EXIT_BAD_INPUT, "not valid YAML",
                    f'in "{path}", line 2')
    assert "<unicode string>" not in line


@pytest.mark.registry
def test_fix_keeps_the_flow_style_it_found(tmp_path, images, registry_config):
    path = _pod(tmp_path, f"  - name: web\n    image: {images['named-base']}\n"
                          "    ports: [{containerPort: 3000}]\n    args: [a, b]\n")
    result = mutator("review", "--config", registry_config, "--fix", path)
    assert result.returncode == cli.EXIT_OK, result.stderr
    assert "    ports: [{containerPort: 3000}]\n    args: [a, b]\n" in result.stdout
    (pod,) = (d for d in yaml.safe_load_all(result.stdout) if d)
    assert pod["spec"]["containers"][0]["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000}


def test_an_admission_review_refuses_fix_and_honours_yaml_output(tmp_path):
    path = tmp_path / "review.json"
    path.write_text(json.dumps(with_images(review("pod-create-kubectl-run"),
                                           {"docker.io/library/memcached:1.6": UNREACHABLE})))
    one_line(mutator("review", "--fix", str(path)), cli.EXIT_BAD_INPUT,
             "--fix rewrites manifests; an AdmissionReview is answered with its AdmissionReview response")
    answer = mutator("review", "-o", "yaml", str(path))
    assert answer.returncode == cli.EXIT_REFUSED, answer.stderr
    assert not answer.stdout.lstrip().startswith("{")
    document = yaml.safe_load(answer.stdout)
    assert document["kind"] == "AdmissionReview" and document["response"]["allowed"] is False
