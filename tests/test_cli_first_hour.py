"""What a new user meets in the first hour, run through the installed ``mutator`` command:
bad files, flags in the other place, a missing kubeconfig, a plain-HTTP registry, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mutator.commands import cli
from tests.test_cli_edges import one_line, serving_dev, with_fault

MUTATOR = str(Path(sys.executable).with_name("mutator"))


def mutator(*args: str, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MUTATOR, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mutator.yaml"
    path.write_text(text)
    return str(path)


def test_a_ca_file_that_is_not_pem_stops_every_command_naming_the_key_and_file(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    config = _config(tmp_path, f'registries:\n  "127.0.0.1:1": {{ca_file: "{ca}"}}\n')
    pod = tmp_path / "pod.yaml"
    pod.write_text("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: 127.0.0.1:1/x}]}\n")
    for command in (["resolve", "127.0.0.1:1/x"], ["review", str(pod)], ["serve", "--dev"]):
        result = mutator(command[0], "--config", config, *command[1:])
        one_line(result, cli.EXIT_BAD_INPUT, f"mutator {command[0]}: ", "registries.127.0.0.1:1.ca_file",
                 str(ca), "not a PEM CA certificate")


def test_a_client_certificate_that_does_not_load_is_a_config_error(tmp_path):
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    config = _config(tmp_path, f'registries:\n  "127.0.0.1:1": {{cert_file: "{cert}", key_file: "{cert}"}}\n')
    result = mutator("resolve", "--config", config, "127.0.0.1:1/x")
    one_line(result, cli.EXIT_BAD_INPUT, "registries.127.0.0.1:1", f"cert_file {cert}", "do not load")


def test_an_unexpected_error_in_a_lookup_is_one_line_and_a_traceback_only_with_v():
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return with_fault("mutator.resolve.registry.transport", "_tls_context",
                          "a fault inside the lookup", *args)

    quiet = run("resolve", "127.0.0.1:1/x:y")
    assert quiet.returncode == cli.EXIT_REFUSED
    assert "Traceback" not in quiet.stderr
    assert ("unexpected error resolving 127.0.0.1:1/x:y: RuntimeError: a fault inside the lookup"
            in quiet.stderr)
    verbose = run("resolve", "127.0.0.1:1/x:y", "-v")  # -v after the subcommand, as the message says
    assert verbose.returncode == cli.EXIT_REFUSED and "Traceback" in verbose.stderr


def test_a_binary_config_file_is_bad_input_naming_the_byte(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"platform: linux/amd64\n\xff\xfe\x00\x01")
    one_line(mutator("resolve", "--config", str(path), "x"), cli.EXIT_BAD_INPUT,
             f"mutator resolve: --config {path}: not UTF-8 text (byte 22)")


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_is_taken_on_both_sides_of_the_subcommand(where):
    args = ["-v", "resolve", "127.0.0.1:1/x"] if where == "before" else ["resolve", "127.0.0.1:1/x", "-v"]
    result = mutator(*args)
    assert result.returncode == cli.EXIT_REFUSED, result.stderr
    assert " DEBUG " in result.stderr  # -v took effect


def test_report_with_a_missing_kubeconfig_is_one_line_naming_it(tmp_path):
    missing = str(tmp_path / "missing")
    one_line(mutator("report", "--kubeconfig", missing), cli.EXIT_BAD_INPUT,
             f"mutator report: --kubeconfig {missing}: no such file")
    one_line(mutator("report", env={"KUBECONFIG": missing}), cli.EXIT_BAD_INPUT,
             f"mutator report: $KUBECONFIG {missing}: no such file")


def test_report_context_with_in_cluster_is_a_usage_error():
    result = mutator("report", "--context", "prod", "--in-cluster")
    assert result.returncode == cli.EXIT_BAD_INPUT
    assert "argument --in-cluster: not allowed with argument --context" in result.stderr


def _line_with(process: subprocess.Popen[str], fragment: str, *, timeout: float = 15) -> list[str]:
    """stderr lines up to the first holding *fragment*; fails after *timeout* seconds."""
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
        line = process.stderr.readline() if ready else ""
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if fragment in line:
            return lines
    raise AssertionError(f"no line with {fragment!r} on stderr: {lines}")


def test_serve_dev_without_a_kubeconfig_says_there_is_none_and_ctrl_c_exits_130(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    # A ~/.kube/config is never read by the server: it is a developer's, not the webhook's.
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("current-context: [not, a, kubeconfig\n")
    with serving_dev({"HOME": str(tmp_path), "TMPDIR": str(tmp_path)}, MUTATOR) as process:
        lines = _line_with(process, "warm-up skipped")
        assert "no in-cluster service account, no --kubeconfig and no $KUBECONFIG" in lines[-1], lines
        assert not any("current-context" in line or "Traceback" in line for line in lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == cli.EXIT_INTERRUPTED


def test_a_docker_config_whose_auths_is_not_an_object_is_bad_input(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"auths": 5}')
    one_line(mutator("resolve", "--docker-config", str(path), "127.0.0.1:1/x"), cli.EXIT_BAD_INPUT,
             f"mutator resolve: docker config {path}: 'auths' is not an object")


def test_every_option_has_help_and_listen_flags_say_host_port():
    for name, sub in cli._parser()._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            if action.option_strings:
                assert action.help, (name, action.option_strings)
            if action.option_strings and action.nargs != 0:
                # argparse's default metavar is the option's name in capitals, which says nothing
                default = action.dest.upper()
                assert action.metavar not in (None, default) or action.choices, (name, action.option_strings)
    serve_help = mutator("serve", "--help").stdout
    assert "--listen HOST:PORT" in serve_help and "--metrics-listen HOST:PORT" in serve_help


@pytest.mark.parametrize(("command", "codes"), [
    ("serve", ["0", "2", "3", "70", "130"]), ("review", ["0", "1", "2", "70", "130"]),
    ("report", ["0", "1", "2", "70", "130"]), ("resolve", ["0", "1", "2", "70", "130"]),
])
def test_each_help_lists_only_the_exit_codes_of_its_command(command, codes):
    result = mutator(command, "--help")
    assert re.findall(r"^  (\d+) ", result.stdout.split("exit codes:", 1)[1], re.MULTILINE) == codes


@pytest.mark.registry
def test_a_plain_http_registry_reached_over_https_says_so_and_names_the_key(registry, images):
    result = mutator("resolve", images["named-base"])
    assert result.returncode == cli.EXIT_REFUSED
    answer = json.loads(result.stdout)
    assert "answered in plain HTTP" in answer["error"], answer
    assert f"registries.{registry.host}.plain_http: true" in answer["error"]
    assert answer["temporary"] is False and "Traceback" not in result.stderr
