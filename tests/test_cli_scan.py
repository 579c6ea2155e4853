"""Every subcommand with every kind of bad input a new user produces: no traceback, ever, and an
exit code its own ``--help`` documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_cli_first_hour import mutator

pytestmark = pytest.mark.registry
COMMANDS = ("serve", "review", "report", "resolve")
UNREACHABLE = "127.0.0.1:1/app:v1"


def documented(command: str) -> set[int]:
    text = mutator(command, "--help").stdout.split("exit codes:", 1)[1]
    return {int(code) for code in re.findall(r"^  (\d+) ", text, re.MULTILINE)}


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, str]:
    """Files a user points the CLI at by mistake, by what is wrong with them."""
    files = {
        "binary": b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00" * 8,
        "latin1": "platform: linux/amd64 # caf\xe9\n".encode("latin-1"),
        "bad-yaml": b"spec: [\n  {a: 1\n",
        "not-pem": b"hello\n",
        "empty": b"",
        "auths-5": b'{"auths": 5}',
        "json-list": b"[1, 2]",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = str(tmp_path / name)
        Path(paths[name]).write_bytes(content)
    paths["missing"] = str(tmp_path / "missing")
    paths["directory"] = str(tmp_path)
    paths["bad-ca-config"] = str(tmp_path / "ca.yaml")
    ca = f'registries:\n  "127.0.0.1:1": {{ca_file: "{paths["not-pem"]}"}}\n'
    Path(paths["bad-ca-config"]).write_text(ca)
    return paths


def _pod(tmp_path: Path, image: str) -> str:
    path = tmp_path / f"pod-{len(list(tmp_path.glob('pod-*')))}.yaml"
    path.write_text(f"kind: Pod\nmetadata: {{name: p}}\n"
                    f"spec: {{containers: [{{name: c, image: '{image}'}}]}}\n")
    return str(path)


def cases(bad: dict[str, str], tmp_path: Path, plain_http_image: str) -> list[list[str]]:
    files = ("missing", "binary", "latin1", "bad-yaml", "empty", "directory", "json-list")
    common = [["--no-such-flag"], ["--config"]] + [["--config", bad[f]] for f in files]
    common.append(["--config", bad["bad-ca-config"]])
    by_command: dict[str, list[list[str]]] = {command: [] for command in COMMANDS}
    for command in ("review", "report", "resolve"):
        by_command[command] += [["--docker-config", bad[f]]
                                for f in ("missing", "binary", "auths-5", "json-list")]
    by_command["serve"] += [["--listen", "nowhere"], ["--listen", "127.0.0.1:99999"],
                            ["--tls-cert", bad["missing"], "--tls-key", bad["missing"]],
                            ["--tls-cert", bad["binary"], "--tls-key", bad["not-pem"]],
                            ["--tls-cert", bad["directory"], "--tls-key", bad["directory"]],
                            ["--tls-reload-seconds", "-1", "--dev"], ["--metrics-listen", "x", "--dev"]]
    by_command["serve"] += [["--dev", "--listen", "127.0.0.1:0", "--kubeconfig", bad[f]]
                            for f in ("binary", "bad-yaml", "empty", "latin1")]
    by_command["review"] += [[bad[f]] for f in files] + [[], ["--mode", "never", "-"]] + [
        [_pod(tmp_path, image)] for image in (UNREACHABLE, plain_http_image, "oci:/nowhere", "UPPER/x",
                                              f"docker-archive:{bad['binary']}", "")]
    by_command["report"] += [["--kubeconfig", bad[f]] for f in ("missing", "binary", "bad-yaml", "empty")]
    by_command["report"] += [["--context", "x", "--in-cluster"], ["--by", "nothing"], ["-o", "pdf"]]
    by_command["resolve"] += [[image] for image in (UNREACHABLE, plain_http_image, "UPPER/x", "",
                                                   "oci:/nowhere", f"oci:{bad['directory']}",
                                                   f"docker-archive:{bad['binary']}",
                                                   f"docker-archive:{bad['missing']}")]
    by_command["resolve"] += [["--platform", "linux", "x"], []]
    # review and resolve need something to work on, or argparse stops before the config is read
    operand = {"serve": [], "report": [], "review": [_pod(tmp_path, UNREACHABLE)], "resolve": [UNREACHABLE]}
    return [[command, *args, *operand[command]] for command in COMMANDS for args in common] + [
        [command, *args] for command in COMMANDS for args in by_command[command]]


def test_no_bad_input_makes_a_traceback_and_every_exit_code_is_documented(bad, tmp_path, images):
    codes = {command: documented(command) for command in COMMANDS}
    scanned, problems = 0, []
    for argv in cases(bad, tmp_path, images["named-base"]):  # plain HTTP, asked for over HTTPS
        result = mutator(*argv, env={"KUBECONFIG": bad["missing"], "HOME": str(tmp_path)}, timeout=90)
        scanned += 1
        internal = result.returncode == 70  # documented, but a bug: bad input must never reach it
        if "Traceback" in result.stderr or result.returncode not in codes[argv[0]] or internal:
            problems.append((argv, result.returncode, result.stderr[-400:]))
    assert problems == [], problems
    assert scanned >= 90  # every case above ran
