"""With the webhook stopped: ``enforce`` (failurePolicy Fail) lets no Pod in, and a ``warn`` Pod is admitted
and then fails at the kubelet exactly as it would without us."""

from __future__ import annotations

from tests.e2e.conftest import serving
from tests.e2e.webhook_config import FAILURE_POLICY, LABEL

from . import pods
from .node import Node


def test_webhook_down_enforce_admits_nothing_and_warn_fails_at_the_kubelet(node: Node, registry_config,
                                                                           seed_images):
    assert FAILURE_POLICY["enforce"] == "Fail" and FAILURE_POLICY["warn"] == "Ignore"
    with serving(node.kube, registry_config) as registered:
        enforce = node.namespace("down-enforce", {LABEL: "enforce"})
        warn = node.namespace("down-warn", {LABEL: "warn"})
        assert registered.webhook.stop() == 0
        manifest = pods.pod("seed", seed_images["named"], node=node, non_root=True)
        stderr = pods.refused(node, enforce, manifest)
        assert 'failed calling webhook "enforce.nonroot-mutator.dev"' in stderr
        stored = pods.create(node, warn, manifest)
        assert pods.security_context(stored) == {}  # admitted unpatched
        result = pods.outcome(node, warn, "seed")
        assert result.reason == "CreateContainerConfigError"
        assert "image has non-numeric user (app), cannot verify user is non-root" in result.message
