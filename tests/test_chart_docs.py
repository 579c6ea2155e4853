"""What the chart tells a person: the NOTES printed at install, and the chart's README."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from tests.support.chart import CHART, NAMESPACE, one, render, render_notes

README = CHART / "README.md"


def commands(notes: str) -> list[str]:
    """The shell commands NOTES shows, one per line, with their trailing comment removed."""
    lines = (line.split("#", 1)[0].strip() for line in notes.splitlines())
    return [re.sub(r"^[A-Z][\w ]*:\s+", "", line) for line in lines if re.search(r"\b(kubectl|curl)\b", line)]


def test_notes_give_the_blocking_port_forward_and_the_curl_as_two_commands():
    values = {"metrics": {"port": 9191}}
    notes = render_notes(values, release="rel")
    service = one(render(values, release="rel"), "Service")
    ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
    forwards = [c for c in commands(notes) if " port-forward " in c]
    name = service["metadata"]["name"]
    assert forwards == [f"kubectl -n {NAMESPACE} port-forward svc/{name} {ports['metrics']}"]
    assert not re.search(r"port-forward[^\n]*(&&|;|\||&$)", notes), "the port-forward never returns"
    assert f"curl -s localhost:{ports['metrics']}/metrics" in commands(notes)
    assert "another terminal" in notes


# --- the chart's README: its values table follows values.yaml and values.schema.json ------------------


def documented_values(values: Mapping[str, Any], schema: Mapping[str, Any],
                      prefix: str = "") -> Iterator[tuple[str, Any, Mapping[str, Any]]]:
    """(dotted path, default, schema) of every value a user sets: a map the schema spells out key by key
    is entered; a free-form map (``resources.requests``, ``labels``, ``config``) is one value."""
    extra = schema.get("additionalProperties")
    for key, value in values.items():
        node = schema.get("properties", {}).get(key) or (extra if isinstance(extra, dict) else {})
        if isinstance(value, dict) and value and node.get("properties"):
            yield from documented_values(value, node, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value, node


def type_cell(node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(f"`{choice}`" for choice in node["enum"])
    kind = node.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if node.get("pattern", "").endswith("(ms|s|m|h))+$"):
        text = "duration"  # Go's, as Prometheus and cert-manager read it
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        return f"{text}, {low}..{high}"
    return f"{text}, >= {low}" if low is not None else text


def default_cell(value: Any) -> str:
    return f"`{value}`" if isinstance(value, str) and value else f"`{json.dumps(value)}`"


def expected_rows() -> dict[str, tuple[str, str]]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = documented_values(values, schema)
    return {path: (type_cell(node), default_cell(value)) for path, value, node in found}


def table_rows() -> dict[str, tuple[str, str, str]]:
    """The README's values table: value → (type, default, description)."""
    section = README.read_text().split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str, str]] = {}
    for row in section.splitlines():
        if row.startswith("| `"):
            name, kind, default, what = (cell.strip() for cell in row.strip("|").split(" | "))
            assert name.strip("`") not in rows, f"{name} is listed twice"
            rows[name.strip("`")] = (kind, default, what)
    return rows


def test_chart_readme_lists_every_value_once_with_its_type_and_default():
    expected, listed = expected_rows(), table_rows()
    assert sorted(set(expected) - set(listed)) == [], "values.yaml values missing from the table"
    assert sorted(set(listed) - set(expected)) == [], "the table lists values values.yaml does not have"
    for name, (kind, default) in expected.items():
        assert listed[name][:2] == (kind, default), name
        assert listed[name][2], f"{name} has no description"
