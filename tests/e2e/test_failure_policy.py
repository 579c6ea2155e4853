"""With the webhook down, the API server applies each mode's failurePolicy from the configuration."""

from __future__ import annotations

import json
import secrets

from .conftest import Registered, pod_manifest
from .webhook_config import FAILURE_POLICY, LABEL


def test_webhook_down_fails_closed_for_enforce_and_open_for_audit(registered: Registered, images):
    kube = registered.kube
    assert FAILURE_POLICY == {"enforce": "Fail", "warn": "Ignore", "audit": "Ignore"}
    names = {mode: f"e2e-down-{mode}-{secrets.token_hex(3)}" for mode in ("enforce", "warn", "audit")}
    for mode, name in names.items():
        kube.create_namespace(name, {LABEL: mode})
    try:
        assert registered.webhook.stop() == 0  # graceful SIGTERM exit
        manifest = json.dumps(pod_manifest("p", ("app", images["named-base"])))
        refused = kube.kubectl("-n", names["enforce"], "create", "-f", "-", input=manifest, check=False)
        assert refused.returncode != 0
        assert 'failed calling webhook "enforce.nonroot-mutator.dev"' in refused.stderr
        for mode in ("warn", "audit"):
            kube.kubectl("-n", names[mode], "create", "-f", "-", input=manifest)
            pod = kube.api_get(f"/api/v1/namespaces/{names[mode]}/pods/p")
            assert pod["spec"]["containers"][0].get("securityContext") is None  # admitted unpatched
    finally:
        kube.kubectl("delete", "namespace", *names.values(), "--wait=false")
