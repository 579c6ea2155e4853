"""The Helm chart, rendered by a real Helm binary: shared by the chart tests and the e2e tier."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "nonroot-mutator"
RELEASE, NAMESPACE = "nm", "nonroot-mutator"


def helm() -> str:
    """``.venv/bin/helm`` (scripts/install-helm.sh puts it there), else one on PATH."""
    beside = Path(sys.executable).parent / "helm"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("helm")
    if not found:
        raise FileNotFoundError("helm is not installed: run scripts/install-helm.sh")
    return found


def run_helm(*args: str, values: Mapping[str, Any] | None = None, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run helm with *values* in a file (``-f``), so nested values need no --set escaping."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        json.dump(dict(values or {}), handle)
        handle.flush()
        return subprocess.run([helm(), *args, "-f", handle.name], capture_output=True, text=True,
                              timeout=timeout, check=check)


def render(values: Mapping[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE,
           kube_version: str | None = None, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``helm template`` → the rendered objects (empty documents dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace, *extra]
    if kube_version:
        args += ["--kube-version", kube_version]
    result = run_helm(*args, values=values)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


NOTES_PROBE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: |-
    {{- tpl (.Files.Get "probe/NOTES.txt") . | nindent 4 }}
"""


def render_notes(values: Mapping[str, Any] | None = None, *, release: str = RELEASE,
                 namespace: str = NAMESPACE) -> str:
    """What ``helm install`` prints as NOTES, without a cluster: ``helm template`` never renders NOTES.txt,
    so a copy of the chart renders its text through ``tpl``, with the chart's own named templates."""
    with tempfile.TemporaryDirectory() as scratch:
        chart = Path(scratch) / CHART.name
        shutil.copytree(CHART, chart)
        (chart / "probe").mkdir()
        (chart / "templates" / "NOTES.txt").rename(chart / "probe" / "NOTES.txt")
        (chart / "templates" / "notes-probe.yaml").write_text(NOTES_PROBE)
        result = run_helm("template", release, str(chart), "--namespace", namespace,
                          "--show-only", "templates/notes-probe.yaml", values=values)
    return str(yaml.safe_load(result.stdout)["data"]["notes"])


def find(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = find(objects, kind)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, rendered {len(found)}")
    return found[0]
