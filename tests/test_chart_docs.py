"""What the chart tells a person: the NOTES printed at install, and the chart's README."""

from __future__ import annotations

import re

from tests.support.chart import NAMESPACE, one, render, render_notes


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
