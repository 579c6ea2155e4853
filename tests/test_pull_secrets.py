"""Pure logic of pull secrets: which Pod asks (PullContext), what a Secret holds, how a watch applies.

The cluster side (informers against a real API server) is in tests/e2e/test_pull_secrets.py.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from mutator.decide import admission
from mutator.errors import ConfigError
from mutator.resolve.kube import pullsecrets
from mutator.resolve.kube.informer import Informer, Resource, _Gone
from mutator.resolve.kube.pullsecrets import account_pull_secrets, secret_keyring
from mutator.resolve.registry.authn.credentials import PullContext
from mutator.serve.pipeline import pull_context
from tests.support.fixtures import review

HOST = "registry.example:5000"


def context_of(name: str) -> PullContext:
    return pull_context(admission.validate(review(name)))


def pod_review(spec: dict[str, Any], *, namespace: str = "team-a") -> admission.Review:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}
    return admission.validate(admission.review_for_pod(pod))


def test_captured_pods_name_their_namespace_secrets_and_service_account():
    assert context_of("pod-create-kubectl-run") == PullContext("nonroot-demo", (), "default")
    assert context_of("pod-create-multi") == PullContext("nonroot-demo", ("regcred",), "web-app")


def test_v120_ephemeral_container_update_has_no_pod_spec_so_no_pod_credentials():
    assert context_of("pod-ephemeralcontainers-update") == PullContext("nonroot-demo", (), "")


def test_pull_secret_names_keep_order_once_each_and_skip_malformed_entries():
    found = pull_context(pod_review({"imagePullSecrets": [
        {"name": "b"}, {"name": "a"}, {"name": "b"}, {}, {"name": 3}, "c", {"name": ""}]}))
    assert found.pull_secrets == ("b", "a")
    assert pull_context(pod_review({"imagePullSecrets": "nope"})).pull_secrets == ()


def test_service_account_falls_back_to_the_deprecated_field_then_default():
    assert pull_context(pod_review({"serviceAccountName": "builder"})).service_account == "builder"
    assert pull_context(pod_review({"serviceAccount": "legacy"})).service_account == "legacy"
    assert pull_context(pod_review({"serviceAccountName": 7})).service_account == "default"


def secret(kind: str, data: dict[str, str] | None, name: str = "regcred") -> dict[str, Any]:
    return {"metadata": {"namespace": "team-a", "name": name}, "type": kind,
            **({"data": data} if data is not None else {})}


def encoded(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_both_pull_secret_types_become_keyrings_that_name_their_secret():
    config_json = secret("kubernetes.io/dockerconfigjson",
                         {".dockerconfigjson": encoded({"auths": {HOST: {"auth": auth("alice", "pw")}}})})
    legacy = secret("kubernetes.io/dockercfg",
                    {".dockercfg": encoded({HOST: {"username": "bob", "password": "pw2"}})}, "old")
    [alice] = secret_keyring(config_json).lookup(f"{HOST}/app")
    [bob] = secret_keyring(legacy).lookup(f"{HOST}/app")
    assert (alice.username, alice.password, alice.source) == ("alice", "pw", "secret team-a/regcred")
    assert (bob.username, bob.source) == ("bob", "secret team-a/old")


def test_other_secret_types_are_not_pull_secrets():
    assert secret_keyring(secret("Opaque", {".dockerconfigjson": encoded({"auths": {}})})) is None
    assert secret_keyring(secret("kubernetes.io/service-account-token", {"token": "eA=="})) is None


@pytest.mark.parametrize("data", [
    None,
    {".dockerconfigjson": "%%% not base64"},
    {".dockerconfigjson": base64.b64encode(b"not json").decode()},
    {".dockerconfigjson": encoded(["a list"])},
    {".dockerconfigjson": encoded({"auths": "nope"})},
    {".dockerconfig": encoded({"auths": {}})},  # the wrong key for the type
])
def test_a_garbage_pull_secret_is_skipped_with_a_log_line(data, caplog):
    with caplog.at_level(logging.WARNING, logger="mutator"):
        keyring = secret_keyring(secret("kubernetes.io/dockerconfigjson", data, "broken"))
    assert keyring is not None and len(keyring) == 0
    assert any("secret team-a/broken" in r.getMessage() for r in caplog.records)


def test_a_garbage_entry_is_skipped_and_the_good_ones_kept(caplog):
    document = {"auths": {"bad.example": {"auth": "!!"}, HOST: {"auth": auth("alice", "pw")}}}
    with caplog.at_level(logging.WARNING, logger="mutator"):
        keyring = secret_keyring(secret("kubernetes.io/dockerconfigjson",
                                        {".dockerconfigjson": encoded(document)}))
    assert keyring is not None and len(keyring) == 1
    assert "pw" not in caplog.text


def test_service_account_pull_secrets_in_order():
    account = {"imagePullSecrets": [{"name": "one"}, {"name": "two"}, {"nome": "x"}],
               "secrets": [{"name": "token"}]}
    assert account_pull_secrets(account) == ("one", "two")
    assert account_pull_secrets({}) == ()


def informer() -> Informer[str]:
    """An informer keeping a Secret's type and dropping 'Opaque'; _apply needs no API client."""
    return Informer(None, Resource("Secret", "secrets"),  # type: ignore[arg-type]
                    transform=lambda obj: None if obj.get("type") == "Opaque" else obj.get("type"))


def event(kind: str, name: str, version: str, secret_type: str = "kubernetes.io/dockercfg"
          ) -> dict[str, Any]:
    metadata = {"namespace": "ns", "name": name, "resourceVersion": version}
    return {"type": kind, "object": {"metadata": metadata, "type": secret_type}}


def test_watch_events_add_change_and_delete_and_advance_the_version():
    cache = informer()
    assert cache._apply(event("ADDED", "s", "5"), "4") == "5"
    assert cache.get("ns", "s") == "kubernetes.io/dockercfg"
    cache._apply(event("MODIFIED", "s", "6", "kubernetes.io/dockerconfigjson"), "5")
    assert cache.get("ns", "s") == "kubernetes.io/dockerconfigjson"
    cache._apply(event("MODIFIED", "s", "7", "Opaque"), "6")  # no longer ours: dropped
    assert cache.get("ns", "s") is None
    cache._apply(event("ADDED", "t", "8"), "7")
    assert cache._apply(event("DELETED", "t", "9"), "8") == "9"
    assert cache.get("ns", "t") is None
    assert cache._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}}, "9") == "12"


def test_an_expired_watch_means_list_again():
    with pytest.raises(_Gone):
        informer()._apply({"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                        "message": "too old resource version"}}, "1")


async def test_the_switch_turns_cluster_reading_off_without_touching_the_cluster(monkeypatch, caplog):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    caplog.set_level(logging.INFO, logger="mutator")
    assert await pullsecrets.from_config(enabled=False, kubeconfig="/nonexistent/kubeconfig") is None
    assert "pull_secrets: false" in caplog.text


async def test_no_cluster_means_nothing_read_and_a_named_bad_kubeconfig_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert await pullsecrets.from_config(enabled=True, kubeconfig=None) is None
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(ConfigError, match=f"kubeconfig {broken} is unusable"):
        await pullsecrets.from_config(enabled=True, kubeconfig=str(broken))
