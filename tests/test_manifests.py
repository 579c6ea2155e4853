"""Pure: reading manifests (lists, streams, bounds), the review table and --fix on round-trip YAML."""

from __future__ import annotations

import jsonpatch
import pytest

from mutator.commands import manifests, review_command
from mutator.decide import findings, policy, workloads
from mutator.decide.images import ImageUser
from mutator.decide.policy import Mode
from mutator.errors import BadInput

STREAM = """\
# leading comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web  # kept
spec:
  template:
    spec:
      containers:
        - name: app
          image: named
---
---
apiVersion: v1
kind: List
items:
  - kind: Pod
    metadata: {name: p}
    spec: {containers: [{name: c, image: root}]}
  - kind: Secret
    metadata: {name: s}
"""
RESOLVED = {
    "named": ImageUser("named", "r/named:1", "sha256:" + "a" * 64, "node", 1000, 1000),
    "root": ImageUser("root", "r/root:1", "sha256:" + "b" * 64, "", 0, 0),
}


@pytest.fixture
def source(tmp_path) -> manifests.Source:
    path = tmp_path / "in.yaml"
    path.write_text(STREAM)
    return manifests.load(str(path))


def test_documents_and_list_items_with_where_they_sit(source):
    assert len(source.documents) == 2  # the empty document is dropped
    items = list(manifests.items([source]))
    assert [(i.obj["kind"], i.pointer) for i in items] == [
        ("Deployment", ""), ("Pod", "/items/0"), ("Secret", "/items/1")]
    assert items[0].source.endswith("in.yaml#1") and items[1].document is source.documents[1]


def reviewed(source: manifests.Source, mode: Mode) -> list[review_command.Reviewed]:
    results = []
    for item in manifests.items([source]):
        if not workloads.supported(item.obj.get("kind")):
            results.append(review_command.Reviewed(item, None))
            continue
        result = review_command.Reviewed(item, workloads.of(item.obj))
        assert result.workload is not None and result.workload.target is not None
        review_command.decide(result, result.workload.target, RESOLVED, mode)
        results.append(result)
    return results


def test_table_has_one_row_per_container_and_skipped_kinds(source):
    lines = review_command.table(reviewed(source, Mode.ENFORCE), Mode.ENFORCE).splitlines()
    assert lines[0].split() == list(review_command.COLUMNS)
    assert lines[1].split()[:6] == ["deployment/web", "app", "named", "node", "patch", "1000:1000"]
    assert lines[1].endswith("USER node; Dockerfile: USER 1000:1000")
    assert lines[2].split()[:6] == ["pod/p", "c", "root", '""', "refused", "0:0"]
    assert lines[3].split()[:5] == ["secret/s", "-", "-", "-", "skipped"]
    audit = review_command.table(reviewed(source, Mode.AUDIT), Mode.AUDIT).splitlines()
    assert audit[1].split()[4:6] == ["would", "patch"] and audit[2].split()[4] == "warned"


def test_fix_patches_the_loaded_documents_in_place_and_dumps_them_with_comments(source):
    for result in reviewed(source, Mode.ENFORCE):
        jsonpatch.apply_patch(result.item.document, result.fix, in_place=True)
    text = manifests.dump([source])
    assert "# leading comment" in text and "name: web  # kept" in text
    assert "        - name: app\n          image: named\n          securityContext:\n" \
           "            runAsUser: 1000\n            runAsGroup: 1000\n" in text
    assert "runAsNonRoot" not in text  # the fix adds the numbers only
    assert text.count("runAsUser") == 1  # nothing to fix for a root image: it needs a new image


def test_the_fix_does_not_depend_on_the_mode():
    spec = {"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "named"}]}}
    target = workloads.of(spec).target
    assert target is not None
    for mode in Mode:
        result = review_command.Reviewed(manifests.Item("x", spec, "", spec), workloads.of(spec))
        review_command.decide(result, target, RESOLVED, mode)
        assert result.fix == [{"op": "add", "path": "/spec/containers/0/securityContext",
                               "value": {"runAsUser": 1000, "runAsGroup": 1000}}]
        assert [f.outcome for f in result.findings] == ["patch"]
        assert findings.collect(target, RESOLVED, policy.decide(target, RESOLVED, mode))[0].fix == \
            "USER 1000:1000"


def test_bounds_and_encodings(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * manifests.MAX_FILE_BYTES)
    with pytest.raises(BadInput, match="larger than"):
        manifests.load(str(big))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(BadInput, match="not UTF-8"):
        manifests.load(str(latin))
    dup = tmp_path / "dup.yaml"
    dup.write_text("a: 1\na: 2\n")
    with pytest.raises(BadInput, match=r"dup\.yaml"):
        manifests.load(str(dup))


@pytest.mark.parametrize("style", ["flush", "indented"])
def test_fix_keeps_the_files_own_indentation(tmp_path, style):
    item = "" if style == "flush" else "  "
    text = (f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n"
            f"  {item}- name: c  # the app\n  {item}  image: named\n  {item}  args:\n"
            f"  {item}  {item}- --port=80\n")
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    source = manifests.load(str(path))
    (result,) = reviewed(source, Mode.ENFORCE)
    jsonpatch.apply_patch(result.item.document, result.fix, in_place=True)
    fixed = manifests.dump([source]).split("---\n", 1)[1]
    added = (f"  {item}  securityContext:\n  {item}    runAsUser: 1000\n  {item}    runAsGroup: 1000\n")
    assert fixed == text + added  # every line the developer wrote is as written, the fix appended


def test_alias_bombs_are_bad_input_and_self_aliases_do_not_hang(tmp_path):
    bomb = ["a: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(bomb).replace("a: &a0", "a0: &a0") + "\nkind: Pod\n")
    with pytest.raises(BadInput, match="aliases expand to over"):
        manifests.load(str(path))
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [*a]\nkind: Pod\n")
    assert manifests.load(str(loop)).documents[0]["kind"] == "Pod"  # the parser breaks the cycle
    fine = tmp_path / "anchors.yaml"
    fine.write_text("x: &labels {app: web}\ny: *labels\n")
    assert manifests.load(str(fine)).documents[0]["y"]["app"] == "web"
