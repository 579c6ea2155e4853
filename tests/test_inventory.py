"""Pure: the report's verdict for every kind of container, and its Markdown/HTML read back."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

from mutator.commands import report_render
from mutator.commands.inventory import Scan, assess
from mutator.decide import evidence
from mutator.decide.images import ImageFailure, ImageUser

DIGEST = "sha256:" + "e" * 64
RESOLVED = {
    "named": ImageUser("named", "r/named:1", DIGEST, "node", 1000, 1000),
    "numeric": ImageUser("numeric", "r/numeric:1", DIGEST, "1234", 1234, None),
    "root": ImageUser("root", "r/root:1", DIGEST, "", 0, 0),
    "ghost": ImageUser("ghost", "r/ghost:1", DIGEST, "ghost", None, None, problem="user 'ghost' not found"),
    "gone": ImageFailure("gone", "manifest unknown", temporary=False),
}


def pod(name: str, containers: list[dict[str, Any]], annotations: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "team"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"containers": containers, **spec}}


def test_each_verdict():
    record = json.dumps({"patched": {"image": "named", "digest": DIGEST, "user": "node", "uid": 1000,
                                     "gid": 1000}})
    obj = pod("p", [
        {"name": "patched", "image": "named", "securityContext": {"runAsUser": 1000, "runAsNonRoot": True}},
        {"name": "mine", "image": "named", "securityContext": {"runAsUser": 1000}},
        {"name": "numeric", "image": "numeric"},
        {"name": "named", "image": "named"},
        {"name": "root", "image": "root"},
        {"name": "zero", "image": "numeric", "securityContext": {"runAsUser": 0}},
        {"name": "ghost", "image": "ghost"},
        {"name": "gone", "image": "gone"},
    ], {evidence.ANNOTATION: json.dumps({**json.loads(record), "mine": {"uid": 2000}})},
        securityContext={"runAsNonRoot": True})
    rows = {r.container: r for r in assess(obj, "Pod", mode="enforce", resolutions=RESOLVED)}
    assert {name: r.verdict for name, r in rows.items()} == {
        "patched": "patched", "mine": "fine", "numeric": "fine", "named": "named-user", "root": "root",
        "zero": "root", "ghost": "unresolvable", "gone": "unresolvable"}
    patched = rows["patched"]
    assert (patched.digest, patched.user, patched.run_as_user, patched.run_as_non_root) == (
        DIGEST, "node", 1000, True)
    assert "set by nonroot-mutator from USER node" in patched.detail
    assert rows["named"].detail == ("USER node is uid 1000, not set in the manifest; "
                                   "Dockerfile: USER 1000:1000")
    assert rows["root"].detail.startswith("no USER") and rows["zero"].detail.startswith("runAsUser: 0")
    assert rows["gone"].detail == "manifest unknown"
    assert all(r.mode == "enforce" and r.workload == "pod/p" for r in rows.values())


def test_workload_templates_are_never_patched_by_us():
    deployment = {"metadata": {"name": "web", "namespace": "team"}, "spec": {"template": {"spec": {
        "containers": [{"name": "a", "image": "named", "securityContext": {"runAsUser": 1000}}]}}}}
    (row,) = assess(deployment, "Deployment", mode="", resolutions=RESOLVED)
    assert (row.workload, row.verdict, row.mode) == ("deployment/web", "fine", "")
    del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    (bare,) = assess(deployment, "Deployment", mode="", resolutions=RESOLVED)
    (guarded,) = assess(deployment, "Deployment", mode="enforce", resolutions=RESOLVED)
    assert bare.verdict == guarded.verdict == "named-user"
    assert "patched at admission" not in bare.detail
    assert guarded.detail.endswith("; its Pods are patched at admission (enforce namespace)")


def scan() -> Scan:
    result = Scan("https://127.0.0.1:6443", "admin@e2e", "pod", generated="2026-01-02T03:04:05Z")
    result.rows += assess(pod("a|b", [{"name": "root", "image": "root"}]), "Pod", mode="enforce",
                          resolutions=RESOLVED)
    other = pod("web", [{"name": "app", "image": "<named>"}])
    other["metadata"]["namespace"] = "other"
    result.rows += assess(other, "Pod", mode="", resolutions={"<named>": RESOLVED["named"]})
    return result


def test_summary_counts_per_namespace():
    assert scan().summary() == {
        "other": {"fine": 0, "patched": 0, "named-user": 1, "root": 0, "unresolvable": 0},
        "team": {"fine": 0, "patched": 0, "named-user": 0, "root": 1, "unresolvable": 0},
    }


def test_markdown_names_the_controls_the_cluster_and_the_date():
    text = report_render.render(scan(), "markdown")
    for control in ("A.9.4.4", "A.12.6.1", "A.14.2.5", "NIST SP 800-171 3.1.7"):
        assert control in text
    assert "`https://127.0.0.1:6443`" in text and "`admin@e2e`" in text and "2026-01-02T03:04:05Z" in text
    assert "| team | enforce | 0 | 0 | 0 | 1 | 0 |" in text
    assert "| team | enforce | pod/a\\|b | root | root |" in text  # a | in a name cannot break the table


class Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.classes: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []
            self.classes += [v or "" for k, v in attrs if k == "class"]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_html_is_self_contained_escaped_and_reads_back():
    text = report_render.render(scan(), "html")
    assert "<script" not in text and "http" not in text.replace("https://127.0.0.1:6443", "")
    assert "&lt;named&gt;" in text and "<named>" not in text
    cells = Cells()
    cells.feed(text)
    containers = [r for r in cells.rows if len(r) == len(report_render.CONTAINER_COLUMNS)]
    assert containers[0] == list(report_render.CONTAINER_COLUMNS)
    assert containers[1][:4] == ["team", "enforce", "pod/a|b", "root"]
    assert containers[2][2:4] == ["pod/web", "app"] and containers[2][9] == "named-user"
    assert "root" in cells.classes and "named-user" in cells.classes


def test_json_and_table():
    data = json.loads(report_render.render(scan(), "json"))
    assert data["cluster"] == {"server": "https://127.0.0.1:6443", "context": "admin@e2e"}
    assert [c["verdict"] for c in data["containers"]] == ["root", "named-user"]
    lines = report_render.render(scan(), "table").splitlines()
    assert lines[0].startswith("cluster https://127.0.0.1:6443 (context admin@e2e)")
    assert lines[2].split()[:3] == ["NAMESPACE", "MODE", "WORKLOAD"]
