"""Feedback and evidence against a real kube-apiserver: apply-time warnings on workloads, ``review --fix``
applied for real, the audit trail and the Pod annotation, and ``mutator report`` read back.

Some Pods are stored *before* the webhook is registered, as in a cluster that adopts it late: the report
must still tell what they run as.
"""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mutator.decide.evidence import ANNOTATION
from tests.support.webhook import WebhookProcess
from tests.test_cli import mutator
from tests.test_inventory import Cells

from .cluster import KubeCluster, wait_for
from .conftest import pod_manifest, register
from .webhook_config import LABEL, workload_warning_configuration

PATCHES = 'nonroot_mutator_containers_total{mode="enforce",outcome="patch"}'


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Setup:
    kube: KubeCluster
    webhook: WebhookProcess
    namespaces: dict[str, str]
    config: str

    def create(self, namespace: str, manifest: dict[str, Any], *, check: bool = True) -> Any:
        return self.kube.kubectl("-n", self.namespaces[namespace], "create", "-f", "-",
                                 input=json.dumps(manifest), check=check)

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.kube.api_get(f"/api/v1/namespaces/{self.namespaces[namespace]}/pods/{name}")


@pytest.fixture(scope="module")
def setup(kube: KubeCluster, registry_config: str, images: dict[str, str]) -> Iterator[Setup]:
    names = {"enforce": unique("ev-enforce"), "none": unique("ev-none"), "clean": unique("ev-clean")}
    for key, name in names.items():
        kube.create_namespace(name, {LABEL: "enforce"} if key == "enforce" else {})
    webhook = WebhookProcess(config=registry_config).start()
    state = Setup(kube, webhook, names, registry_config)
    # Before the webhook is registered: stored as written, whatever the namespace's label says.
    state.create("enforce", pod_manifest("early-root", ("app", images["no-user"])))
    state.create("enforce", pod_manifest("early-named", ("app", images["named-base"])))
    state.create("none", pod_manifest("plain-root", ("app", images["no-user"])))
    state.create("none", pod_manifest("plain-numeric", ("app", images["numeric"])))
    state.create("clean", pod_manifest("numeric", ("app", images["numeric"])))
    pods = register(kube, webhook)
    workloads = workload_warning_configuration(base_url=webhook.url, ca_pem=Path(webhook.cert).read_bytes())
    kube.kubectl("apply", "-f", "-", input=json.dumps(workloads))
    try:
        yield state
    finally:
        for kind, configuration in (("mutatingwebhookconfiguration", pods),
                                    ("validatingwebhookconfiguration", workloads)):
            kube.kubectl("delete", kind, configuration["metadata"]["name"], "--ignore-not-found")
        webhook.stop()
        kube.kubectl("delete", "namespace", *names.values(), "--wait=false")


def deployment(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "app", "image": image}]}}}}


def test_kubectl_apply_of_workloads_prints_what_will_happen(setup, images):
    namespace = setup.namespaces["enforce"]
    root = setup.kube.kubectl("-n", namespace, "apply", "-f", "-",
                              input=json.dumps(deployment("root-web", images["no-user"])))
    assert ('Warning: deployment/root-web: container "app" would be refused: runs as root: no-user:v1 '
            "(no USER); Dockerfile: USER 1000:1000") in root.stderr
    named = setup.kube.kubectl("-n", namespace, "apply", "-f", "-",
                               input=json.dumps(deployment("named-web", images["named-upper"])))
    assert ('Warning: deployment/named-web: container "app" will run as uid 1001: named-upper:v1 '
            "(USER node); Dockerfile: USER 1001:1002") in named.stderr
    # unlabelled namespaces are never sent to us (no replicas: the report counts this namespace's Pods)
    unlabelled = deployment("root-web", images["no-user"])
    unlabelled["spec"]["replicas"] = 0
    quiet = setup.kube.kubectl("-n", setup.namespaces["none"], "apply", "-f", "-",
                               input=json.dumps(unlabelled))
    assert "Warning" not in quiet.stderr


def test_review_fix_output_reviews_fine_and_is_stored_without_a_patch_from_us(setup, images, tmp_path):
    source = textwrap.dedent(f"""\
        # the team's API
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: fixed-api  # keep this name
        spec:
          replicas: 2
          selector: {{matchLabels: {{app: fixed-api}}}}
          template:
            metadata: {{labels: {{app: fixed-api}}}}
            spec:
              containers:
                - name: api
                  image: {images['name-group']}
                - name: side
                  image: {images['named-upper']}
        """)
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "api.yaml").write_text(source)
    fixed = mutator("review", "--fix", str(tmp_path / "k8s"), config=setup.config)
    assert fixed.returncode == 0, fixed.stderr
    assert "# keep this name" in fixed.stdout
    again = mutator("review", "-o", "json", "-", stdin=fixed.stdout, config=setup.config)
    assert again.returncode == 0
    assert {c["verdict"] for w in json.loads(again.stdout)["workloads"] for c in w["containers"]} == {"fine"}

    patches = setup.webhook.metric(PATCHES)
    namespace = setup.namespaces["enforce"]
    applied = setup.kube.kubectl("-n", namespace, "apply", "-f", "-", input=fixed.stdout)
    assert "Warning" not in applied.stderr  # nothing left to say about it

    def pods() -> list[dict[str, Any]] | None:
        items = setup.kube.api_get(
            f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dfixed-api")["items"]
        return items if len(items) == 2 else None

    for pod in wait_for(pods, timeout=60, what="2 replicas of fixed-api"):
        contexts = [c.get("securityContext") for c in pod["spec"]["containers"]]
        # exactly what --fix wrote: our patch would have added runAsNonRoot and the annotation
        assert contexts == [{"runAsUser": 1000, "runAsGroup": 50}, {"runAsUser": 1001, "runAsGroup": 1002}]
        assert ANNOTATION not in (pod["metadata"].get("annotations") or {})
    assert setup.webhook.metric(PATCHES) == patches


def audit_event(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        assert kube.audit_log is not None
        if not kube.audit_log.exists():
            return None
        for line in kube.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (event.get("verb"), event.get("stage"), ref.get("resource"), ref.get("namespace"),
                    ref.get("name"), ref.get("subresource")) == (
                    "create", "ResponseComplete", "pods", namespace, name, None):
                return event
        return None

    return wait_for(find, timeout=30, what=f"the audit event of creating pod {name}")


def test_audit_log_and_the_pod_annotation_explain_the_patch(setup, images):
    resolved = json.loads(mutator("resolve", images["named-upper"], config=setup.config).stdout)
    setup.create("enforce", pod_manifest("evidenced", ("app", images["named-upper"]),
                                         ("numeric", images["numeric"])))
    pod = setup.pod("enforce", "evidenced")
    record = json.loads(pod["metadata"]["annotations"][ANNOTATION])
    # the layer is the one whose /etc/passwd defined node: the upper one, not the big base below it
    assert resolved["user_layer"].startswith("sha256:")
    assert record == {"app": {"image": images["named-upper"], "digest": resolved["digest"], "user": "node",
                              "uid": 1001, "gid": 1002, "layer": resolved["user_layer"]}}
    assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == 1001

    event = audit_event(setup.kube, setup.namespaces["enforce"], "evidenced")
    notes = event["annotations"]
    assert notes["enforce.nonroot-mutator.dev/decision"] == "patched"
    assert notes["enforce.nonroot-mutator.dev/mode"] == "enforce"
    entries = {e["name"]: e for e in json.loads(notes["enforce.nonroot-mutator.dev/containers"])}
    assert entries["app"] == {"name": "app", "outcome": "patch", "image": images["named-upper"],
                              "digest": resolved["digest"], "user": "node", "uid": 1001, "gid": 1002}
    assert entries["numeric"]["outcome"] == "skip" and entries["numeric"]["user"] == "1234"

    refused = setup.create("enforce", pod_manifest("refused", ("app", images["no-user"])), check=False)
    assert refused.returncode != 0 and "USER 1000" in refused.stderr
    notes = audit_event(setup.kube, setup.namespaces["enforce"], "refused")["annotations"]
    assert notes["enforce.nonroot-mutator.dev/decision"] == "refused"
    assert json.loads(notes["enforce.nonroot-mutator.dev/containers"])[0]["detail"] == "no USER"


def report(setup: Setup, *args: str) -> Any:
    namespaces = [arg for key in ("enforce", "none", "clean") for arg in ("-n", setup.namespaces[key])]
    return mutator("report", "--kubeconfig", str(setup.kube.kubeconfig), *namespaces, *args,
                   config=setup.config)


def test_report_reads_every_pod_back_with_its_verdict(setup, images):
    setup.create("enforce", pod_manifest("reported", ("app", images["named-base"])))
    result = report(setup, "-o", "json")
    assert result.returncode == 1, result.stderr  # something runs as root
    data = json.loads(result.stdout)
    assert data["cluster"] == {"server": setup.kube.server, "context": "e2e"}
    rows = {(r["namespace"], r["workload"], r["container"]): r for r in data["containers"]}
    enforce, none, clean = (setup.namespaces[k] for k in ("enforce", "none", "clean"))

    def verdict(namespace: str, pod: str, container: str = "app") -> tuple[str, str]:
        row = rows[(namespace, f"pod/{pod}", container)]
        return row["verdict"], row["mode"]

    assert verdict(enforce, "early-root") == ("root", "enforce")  # stored while the webhook was absent
    assert verdict(enforce, "early-named") == ("named-user", "enforce")
    assert verdict(enforce, "reported") == ("patched", "enforce")
    assert verdict(none, "plain-root") == ("root", "")
    assert verdict(none, "plain-numeric") == ("fine", "")
    assert verdict(clean, "numeric") == ("fine", "")
    patched = rows[(enforce, "pod/reported", "app")]
    assert (patched["user"], patched["run_as_user"], patched["run_as_non_root"]) == ("app", 1000, True)
    assert patched["digest"].startswith("sha256:")
    assert data["summary"][none] == {"fine": 1, "patched": 0, "named-user": 0, "root": 1, "unresolvable": 0}

    only_clean = mutator("report", "--kubeconfig", str(setup.kube.kubeconfig), "-n", clean,
                         config=setup.config)
    assert only_clean.returncode == 0 and "pod/numeric" in only_clean.stdout

    markdown = report(setup, "--context", "e2e", "-o", "markdown").stdout
    assert f"Cluster (API server): `{setup.kube.server}`" in markdown and "ISO/IEC 27001 A.9.4.4" in markdown
    assert f"| {enforce} | enforce | pod/early-root | app |" in markdown

    cells = Cells()
    cells.feed(report(setup, "-o", "html").stdout)
    html_rows = {(r[0], r[2]): r for r in cells.rows if len(r) == 11}
    assert html_rows[(none, "pod/plain-root")][9] == "root"
    assert html_rows[(enforce, "pod/reported")][9] == "patched"


def test_report_by_workload_lists_controllers_not_their_pods(setup, images):
    result = report(setup, "--by", "workload", "-o", "json")
    workloads = {(r["namespace"], r["workload"]) for r in json.loads(result.stdout)["containers"]}
    enforce = setup.namespaces["enforce"]
    assert (enforce, "deployment/fixed-api") in workloads or (enforce, "deployment/named-web") in workloads
    assert (enforce, "pod/early-root") in workloads  # a bare Pod is its own workload
    assert not any(w.startswith("replicaset/") for _, w in workloads)  # owned by their Deployments
    assert not any(w.startswith("pod/fixed-api") or w.startswith("pod/named-web") for _, w in workloads)


def test_report_shows_progress_only_in_a_terminal(setup):
    command = [sys.executable, "-m", "mutator", "report", "--config", setup.config,
               "--kubeconfig", str(setup.kube.kubeconfig), "-n", setup.namespaces["clean"]]
    master, slave = pty.openpty()
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=slave, timeout=60, check=False)
        os.close(slave)
        slave = -1
        shown = b""
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert result.returncode == 0
    assert b"resolving images: 1/1" in shown
    piped = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert piped.returncode == 0 and b"resolving" not in piped.stderr
