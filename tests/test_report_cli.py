"""``mutator report`` when the cluster cannot be read: a clear message and exit 2, never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.support.net import free_port
from tests.test_cli import mutator


def kubeconfig(tmp_path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
    }))
    return str(path)


def test_an_unreachable_api_server_exits_2(tmp_path):
    config = kubeconfig(tmp_path, f"https://127.0.0.1:{free_port()}")
    result = mutator("report", "--kubeconfig", config)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("mutator report: GET /api/v1/namespaces")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--context", "elsewhere"], "elsewhere"),
    (["--in-cluster"], "cannot load the cluster's configuration"),
])
def test_a_wrong_context_or_no_service_account_exits_2(tmp_path, args, message):
    result = mutator("report", "--kubeconfig", kubeconfig(tmp_path, "https://127.0.0.1:1"), *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_missing_kubeconfig_exits_2(tmp_path):
    result = mutator("report", "--kubeconfig", str(tmp_path / "none"))
    assert result.returncode == 2 and f"--kubeconfig {tmp_path / 'none'}: no such file" in result.stderr
