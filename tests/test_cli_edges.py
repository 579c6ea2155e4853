"""The CLI's rough edges, run as a new user would: one clear line, a documented exit code, no traceback."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mutator import __version__
from mutator.commands import cli
from mutator.serve.tls import self_signed


def mutator(*args: str, env: dict[str, str] | None = None, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutator", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The failure contract: the code, one line on stderr, every fragment in it, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def cert(tmp_path: Path) -> tuple[str, str]:
    return self_signed(str(tmp_path), ("127.0.0.1",))


@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key"])
def test_serve_names_the_flag_whose_file_is_missing(cert, tmp_path, flag):
    missing = str(tmp_path / "nope.pem")
    files = {"--tls-cert": cert[0], "--tls-key": cert[1], flag: missing}
    result = mutator("serve", "--listen", "127.0.0.1:0", *(x for kv in files.items() for x in kv))
    one_line(result, cli.EXIT_BAD_INPUT, f"mutator serve: {flag} {missing}: no such file")


def test_serve_says_when_cert_and_key_do_not_load(cert, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    result = mutator("serve", "--listen", "127.0.0.1:0", "--tls-cert", str(garbage), "--tls-key", cert[1])
    one_line(result, cli.EXIT_BAD_INPUT, "mutator serve: cannot load --tls-cert", str(garbage))


def test_serve_on_a_port_in_use_says_so(cert):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = mutator("serve", "--listen", f"127.0.0.1:{port}", "--tls-cert", cert[0],
                         "--tls-key", cert[1])
    one_line(result, cli.EXIT_CANNOT_SERVE, f"mutator serve: cannot listen on 127.0.0.1:{port}",
             "address already in use")


@pytest.mark.parametrize("platform", ["linux", "linux/", "a/b/c/d"])
def test_resolve_platform_is_a_usage_error(platform):
    result = mutator("resolve", "--platform", platform, "127.0.0.1:1/x")
    assert result.returncode == cli.EXIT_BAD_INPUT and "Traceback" not in result.stderr
    assert f"argument --platform: platform must be OS/ARCH[/VARIANT], got '{platform}'" in result.stderr


def _dev_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("nonroot-mutator-*"))


@contextlib.contextmanager
def serving_dev(env: dict[str, str], *command: str) -> Iterator[subprocess.Popen[str]]:
    """``serve --dev`` on a free loopback port, once it said it listens; killed at exit if still up."""
    process = subprocess.Popen([*(command or (sys.executable, "-m", "mutator")), "serve", "--dev", "--listen",
                                "127.0.0.1:0", "--log-format", "text"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on https://127.0.0.1:"), line
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_dev_removes_its_private_key_at_exit(tmp_path):
    with serving_dev({"TMPDIR": str(tmp_path)}) as process:
        (directory,) = _dev_dirs(tmp_path)
        assert (directory / "tls.key").is_file()  # while it serves, the key is there for curl --cacert
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == cli.EXIT_OK
    assert _dev_dirs(tmp_path) == []


def test_serve_dev_removes_its_private_key_after_a_failed_start(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = mutator("serve", "--dev", "--listen", f"127.0.0.1:{port}", env={"TMPDIR": str(tmp_path)})
    one_line(result, cli.EXIT_CANNOT_SERVE, "address already in use")
    assert _dev_dirs(tmp_path) == []


def test_version():
    result = mutator("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mutator {__version__}"


def test_review_mode_help_shows_the_default():
    result = mutator("review", "--help")
    assert result.returncode == 0
    assert re.search(r"--mode \{enforce,warn,audit\}\s+the namespace mode to decide as \(default: enforce\)",
                     result.stdout)


def test_every_exit_code_is_in_the_top_level_help():
    result = mutator("--help")
    assert result.returncode == 0
    codes = re.findall(r"^  (\d+) ", result.stdout.split("exit codes:", 1)[1], re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "70", "130"]
    documented = [cli.EXIT_OK, cli.EXIT_REFUSED, cli.EXIT_BAD_INPUT, cli.EXIT_CANNOT_SERVE,
                  cli.EXIT_INTERNAL, cli.EXIT_INTERRUPTED]
    assert [int(c) for c in codes] == documented


def with_fault(module: str, name: str, message: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with *module*.*name* replaced by a function that raises RuntimeError(*message*)."""
    script = (f"import sys\nimport {module} as target\nimport mutator.commands.cli as cli\n"
              f"def fault(*args, **kwargs):\n    raise RuntimeError({message!r})\n"
              f"target.{name} = fault\nsys.exit(cli.main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)


def test_an_unexpected_exception_is_one_line_and_its_own_exit_code():
    result = with_fault("mutator.commands.cli", "_resolve", "the unexpected\nhappened", "resolve", "x")
    one_line(result, cli.EXIT_INTERNAL,
             "mutator resolve: internal error: RuntimeError: the unexpected happened",
             "rerun with -v for the traceback")
    verbose = with_fault("mutator.commands.cli", "_resolve", "the unexpected\nhappened", "-v", "resolve", "x")
    assert verbose.returncode == cli.EXIT_INTERNAL and "Traceback" in verbose.stderr


def test_serve_on_an_address_that_is_not_ours_says_so(cert):
    # 192.0.2.1 (TEST-NET-1) is never a local address: binding fails at once, no packet is sent.
    result = mutator("serve", "--listen", "192.0.2.1:8443", "--tls-cert", cert[0], "--tls-key", cert[1])
    one_line(result, cli.EXIT_CANNOT_SERVE, "mutator serve: cannot listen on 192.0.2.1:8443",
             "cannot assign requested address")
