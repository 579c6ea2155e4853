"""``oci:DIR`` and ``docker-archive:FILE``: images read offline give the registry's answer.

Each layout and archive is made by ``skopeo copy`` from the loopback registry, so the
same image is compared through both paths; nothing is written by hand but the one
example the README shows, which is rebuilt and compared byte for byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mutator.commands import cli
from tests.test_cli_edges import one_line
from tests.test_cli_first_hour import mutator

pytestmark = pytest.mark.registry
ROOT = Path(__file__).resolve().parent.parent
SAME_FOR_EVERY_SOURCE = ("user", "uid", "gid", "runs_as_root")
CONVERTED_BY_SKOPEO = ("docker-schema2", "uncompressed")  # to an OCI manifest, to a gzip layer
IMAGES = ["named-base", "named-upper", "name-group", "no-user", "whiteout", "opaque-readd", "symlink",
          "missing-name", "docker-schema2", "uncompressed"]


def skopeo(source: str, destination: str, *extra: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", *extra, f"docker://{source}",
                    destination], check=True, capture_output=True, timeout=120)


def resolve(*images: str, config: str | None = None) -> list[dict]:
    result = mutator("resolve", *(["--config", config] if config else []), *images)
    assert result.returncode in (cli.EXIT_OK, cli.EXIT_REFUSED), result.stderr
    assert "Traceback" not in result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _comparable(answer: dict) -> dict:
    return {key: answer.get(key) for key in SAME_FOR_EVERY_SOURCE} | {"failed": "error" in answer}


def test_a_layout_and_an_archive_answer_as_the_registry_does(images, registry_config, tmp_path):
    local: list[str] = []
    for name in IMAGES:
        skopeo(images[name], f"oci:{tmp_path / 'layout'}:{name}")
        skopeo(images[name], f"docker-archive:{tmp_path / name}.tar:test/{name}:v1")
        local += [f"oci:{tmp_path / 'layout'}:{name}", f"docker-archive:{tmp_path / name}.tar"]
    from_registry = resolve(*(images[n] for n in IMAGES), config=registry_config)
    offline = resolve(*local)  # no config: the registry is never asked
    for position, name in enumerate(IMAGES):
        expected = from_registry[position]
        layout, archive = offline[2 * position], offline[2 * position + 1]
        assert _comparable(layout) == _comparable(expected) == _comparable(archive), name
        # the layout holds the registry's own manifest and layers, unless skopeo converted them
        if name not in CONVERTED_BY_SKOPEO:
            assert (layout.get("digest"), layout.get("user_layer")) == (
                expected.get("digest"), expected.get("user_layer")), name
    assert [r["uid"] for r in from_registry[:3]] == [1000, 1001, 1000]  # not a vacuous comparison


def test_a_multi_platform_layout_is_chosen_from_as_a_registry_index_is(images, registry_config, tmp_path):
    skopeo(images["index"], f"oci:{tmp_path / 'multi'}:v1", "--all")
    for platform, uid in (("linux/arm64/v8", 2200), ("linux/amd64", 1100)):
        (offline,) = resolve("--platform", platform, f"oci:{tmp_path / 'multi'}:v1")
        (online,) = resolve("--platform", platform, images["index"], config=registry_config)
        assert offline["uid"] == online["uid"] == uid
        assert offline["digest"] == online["digest"]


def test_review_reads_a_layout_named_in_a_manifest(images, tmp_path):
    skopeo(images["named-base"], f"oci:{tmp_path / 'layout'}:v1")
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                   f"spec: {{containers: [{{name: web, image: 'oci:{tmp_path / 'layout'}:v1'}}]}}\n")
    result = mutator("review", "-o", "json", str(pod))
    assert result.returncode == cli.EXIT_OK, result.stderr
    (container,) = json.loads(result.stdout)["workloads"][0]["containers"]
    assert (container["verdict"], container["uid"], container["gid"]) == ("patch", 1000, 1000)


@pytest.mark.parametrize(("image", "said"), [
    ("oci:{tmp}/nowhere", "no such directory"),
    ("oci:{tmp}", "neither an OCI image layout"),
    ("docker-archive:{tmp}/notes.txt", "not a directory or an uncompressed tar archive"),
    ("oci:{tmp}/layout:ghost", "no image named 'ghost' in index.json (names: v1)"),
])
def test_a_layout_or_archive_that_cannot_be_opened_is_bad_input(images, tmp_path, image, said):
    skopeo(images["numeric"], f"oci:{tmp_path / 'layout'}:v1")
    (tmp_path / "notes.txt").write_text("not an archive\n")
    for command in (["resolve", image.format(tmp=tmp_path)],):
        one_line(mutator(*command), cli.EXIT_BAD_INPUT, "mutator resolve: ", said)


def test_the_readme_example_is_reproducible_and_answers_offline(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "examples/build-oci-layout.py"), str(tmp_path / "fresh")],
                   check=True, timeout=60)
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    committed = files(ROOT / "examples/oci-named-user")
    assert committed == files(tmp_path / "fresh") and len(committed) == 5
    (answer,) = [json.loads(line) for line in
                 mutator("resolve", "oci:examples/oci-named-user:1.6", cwd=str(ROOT)).stdout.splitlines()]
    assert (answer["user"], answer["uid"], answer["gid"]) == ("memcache", 11211, 11211)
    review = mutator("review", "--fix", "examples/pod-oci.yaml", cwd=str(ROOT))
    assert review.returncode == cli.EXIT_OK, review.stderr
    assert "runAsUser: 11211\n        runAsGroup: 11211" in review.stdout
