"""The Helm chart: lint, render with several value sets, validate every object strictly, read what it says.

The checks follow what makes an admission webhook safe to install: it touches only opted-in namespaces,
never the control plane's own; it is HA and hardened; its TLS is consistent; its dashboard and alerts
query metrics the server really exports.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from mutator import config as server_config
from tests.support.chart import CHART, NAMESPACE, RELEASE, ROOT, find, one, render, run_helm
from tests.support.promql import PROMETHEUS_OWN, exported_series, metric_names

FULLNAME = f"{RELEASE}-nonroot-mutator"
MODES = ("enforce", "warn", "audit")
NEVER = ("kube-system", "kube-node-lease", "kube-public")
OLDEST_SCHEMAS, MATCH_CONDITIONS_SCHEMAS = "1.25.0", "1.30.0"  # kubernetes-validate ships 1.25 and later

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"tls": {"certManager": {"enabled": True}}},
    "observed": {
        "autoscaling": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "networkPolicy": {"enabled": True},
    },
    "no-pull-secrets": {"pullSecrets": {"enabled": False}},
    "configured": {
        "webhook": {"timeoutSeconds": 5, "excludeNamespaces": ["monitoring"],
                    "failurePolicy": {"enforce": "Fail", "warn": "Fail", "audit": "Ignore"}},
        "config": {"platform": "linux/arm64", "cache_ttl_seconds": 60,
                   "registries": {"registry.internal:5000": {"plain_http": True,
                                                             "mirrors": ["mirror.internal:5000"]}}},
        "antiAffinity": {"type": "hard"},
        "image": {"digest": "sha256:" + "a" * 64},
    },
}
# Kinds that come from CRDs: kubernetes-validate has no schema for them; their fields are asserted below.
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")


@functools.cache
def rendered(name: str, kube_version: str = OLDEST_SCHEMAS) -> tuple[dict[str, Any], ...]:
    return tuple(render(VALUE_SETS[name], kube_version=kube_version))


def webhooks(objects: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    configuration = one(objects, "MutatingWebhookConfiguration")
    return {hook["name"].split(".", 1)[0]: hook for hook in configuration["webhooks"]}


def pod_spec(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def dockerfile_user() -> tuple[int, int]:
    users = re.findall(r"^USER\s+(\S+)\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid or uid)


# --- lint and strict validation -------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_is_clean(name, tmp_path):
    result = run_helm("lint", "--strict", str(CHART), values=VALUE_SETS[name], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", [OLDEST_SCHEMAS, MATCH_CONDITIONS_SCHEMAS])
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_validates_strictly(name, version):
    objects = rendered(name, version)
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        kubernetes_validate.validate(obj, version, strict=True)


def test_match_conditions_pass_through_and_validate_on_1_30():
    conditions = [{"name": "not-node-users",
                   "expression": "!request.userInfo.username.startsWith('system:node:')"}]
    objects = render({"webhook": {"matchConditions": conditions}}, kube_version=MATCH_CONDITIONS_SCHEMAS)
    for hook in webhooks(tuple(objects)).values():
        assert hook["matchConditions"] == conditions
    kubernetes_validate.validate(one(objects, "MutatingWebhookConfiguration"), MATCH_CONDITIONS_SCHEMAS,
                                 strict=True)
    # off by default: a 1.20 API server rejects the field
    assert all("matchConditions" not in hook for hook in webhooks(rendered("defaults")).values())


@pytest.mark.parametrize(("values", "complaint"), [
    ({"bogus": 1}, "bogus"),
    ({"webhook": {"failurePolicy": {"enforce": "Never", "warn": "Ignore", "audit": "Ignore"}}}, "Fail"),
    ({"securityContext": {"runAsUser": 0, "runAsGroup": 0}}, "runAsUser"),
    ({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds"),
    ({"config": {"registries": {"r:5000": {"plain_http": "yes"}}}}, "plain_http"),
])
def test_schema_rejects_bad_values(values, complaint):
    result = run_helm("template", RELEASE, str(CHART), values=values, check=False)
    assert result.returncode != 0 and complaint in result.stderr


def _leaves(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict) and value and key not in ("config",):
            yield from _leaves(value, path + ".")


def test_schema_covers_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in _leaves(values):
        node: Any = schema
        for part in path.split("."):
            props = node.get("properties", {})
            if part in props:
                node = props[part]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                raise AssertionError(f"values.schema.json does not describe {path}")


# --- the webhook registration ---------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_one_webhook_per_mode_routed_by_label_and_never_to_the_control_plane(name):
    hooks = webhooks(rendered(name))
    assert sorted(hooks) == sorted(MODES)
    excluded = {*NEVER, NAMESPACE, *VALUE_SETS[name].get("webhook", {}).get("excludeNamespaces", [])}
    for mode, hook in hooks.items():
        assert hook["name"] == f"{mode}.nonroot-mutator.dev"
        assert hook["clientConfig"]["service"] == {
            "name": FULLNAME, "namespace": NAMESPACE, "path": f"/mutate/{mode}", "port": 443,
        }
        label, name = hook["namespaceSelector"]["matchExpressions"]
        assert label == {"key": "nonroot-mutator/mode", "operator": "In", "values": [mode]}
        assert (name["key"], name["operator"]) == ("kubernetes.io/metadata.name", "NotIn")
        assert sorted(name["values"]) == sorted(excluded)
        assert set(hook["namespaceSelector"]) == {"matchExpressions"}
        assert hook["rules"] == [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
             "scope": "Namespaced"},
            {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
             "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
        ]
        assert hook["sideEffects"] == "None" and hook["admissionReviewVersions"] == ["v1"]
        assert hook["reinvocationPolicy"] == "IfNeeded" and hook["matchPolicy"] == "Equivalent"
        assert "objectSelector" not in hook


def test_failure_policy_and_timeout_come_from_values():
    defaults = webhooks(rendered("defaults"))
    assert {m: h["failurePolicy"] for m, h in defaults.items()} == {
        "enforce": "Fail", "warn": "Ignore", "audit": "Ignore"}
    assert {h["timeoutSeconds"] for h in defaults.values()} == {10}
    configured = webhooks(rendered("configured"))
    assert configured["warn"]["failurePolicy"] == "Fail"
    assert {h["timeoutSeconds"] for h in configured.values()} == {5}


def test_out_of_cluster_url_and_ca_bundle():
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    objects = tuple(render({"webhook": {"url": "https://127.0.0.1:8443/", "caBundle": bundle}}))
    for mode, hook in webhooks(objects).items():
        assert hook["clientConfig"] == {"url": f"https://127.0.0.1:8443/mutate/{mode}", "caBundle": bundle}


def test_workload_warnings_validate_every_workload_kind_and_never_block():
    objects = rendered("observed")
    configuration = one(objects, "ValidatingWebhookConfiguration")
    secret_ca = one(objects, "Secret")["data"]["ca.crt"]
    pods = webhooks(objects)
    hooks = {hook["name"]: hook for hook in configuration["webhooks"]}
    assert sorted(hooks) == sorted(f"workloads-{mode}.nonroot-mutator.dev" for mode in MODES)
    for mode in MODES:
        hook = hooks[f"workloads-{mode}.nonroot-mutator.dev"]
        assert hook["failurePolicy"] == "Ignore" and hook["timeoutSeconds"] == 3
        assert hook["clientConfig"]["service"]["path"] == f"/warn/workloads/{mode}"
        assert hook["clientConfig"]["caBundle"] == secret_ca
        assert hook["namespaceSelector"] == pods[mode]["namespaceSelector"]
        kinds = {(group, resource) for rule in hook["rules"] for group in rule["apiGroups"]
                 for resource in rule["resources"]}
        assert kinds == {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
                         ("apps", "replicasets"), ("batch", "jobs"), ("batch", "cronjobs")}
        assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in hook["rules"])
    assert find(rendered("defaults"), "ValidatingWebhookConfiguration")  # on by default
    off = render({"webhook": {"workloadWarnings": {"enabled": False}}})
    assert not find(off, "ValidatingWebhookConfiguration")


# --- TLS ------------------------------------------------------------------------------------------


def test_generated_ca_signs_the_serving_certificate_and_is_the_ca_bundle():
    objects = rendered("defaults")
    secret = one(objects, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    key = serialization.load_pem_private_key(data["tls.key"], password=None)
    cert.verify_directly_issued_by(ca)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    names = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert f"{FULLNAME}.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    for hook in webhooks(objects).values():
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == secret["metadata"]["name"]


def test_generated_tls_reads_back_the_existing_secret_on_upgrade():
    """`lookup` keeps the caBundle across upgrades; the template must read the Secret it writes."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace \(include "nonroot-mutator\.tlsSecret"',
                     helpers)
    first, second = render(), render()
    # without a cluster there is nothing to look up: each render makes a fresh CA
    assert one(first, "Secret")["data"]["ca.crt"] != one(second, "Secret")["data"]["ca.crt"]


def test_cert_manager_issues_the_certificate_and_injects_the_ca():
    objects = rendered("cert-manager")
    assert not find(objects, "Secret")
    certificate, issuer = one(objects, "Certificate"), one(objects, "Issuer")
    configuration = one(objects, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{NAMESPACE}/{certificate['metadata']['name']}")
    assert all("caBundle" not in h["clientConfig"] for h in configuration["webhooks"])
    assert certificate["apiVersion"] == issuer["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer",
                                                "group": "cert-manager.io"}
    assert f"{FULLNAME}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == certificate["spec"]["secretName"]


def test_cert_manager_with_an_existing_issuer_creates_none():
    ref = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    objects = render({"tls": {"certManager": {"enabled": True, "issuerRef": ref}}})
    assert not find(objects, "Issuer")
    assert one(objects, "Certificate")["spec"]["issuerRef"] == ref


# --- the Deployment -------------------------------------------------------------------------------


def test_deployment_is_ha_hardened_and_probed():
    objects = rendered("defaults")
    deployment = one(objects, "Deployment")
    spec = pod_spec(objects)
    assert deployment["spec"]["replicas"] == 2
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    uid, gid = dockerfile_user()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    context = container["securityContext"]
    pod_context = spec["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    assert (pod_context["runAsUser"], pod_context["runAsGroup"]) == (uid, gid)
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == container["ports"][0]["name"] == "https"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    # preStop delay, then the drain: in-flight admissions last at most the webhook's timeout
    assert spec["terminationGracePeriodSeconds"] > 5 + webhooks(objects)["enforce"]["timeoutSeconds"]
    assert set(container["resources"]) == {"requests", "limits"}


def test_hpa_replaces_the_fixed_replica_count():
    objects = rendered("observed")
    assert "replicas" not in one(objects, "Deployment")["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == FULLNAME and hpa["spec"]["minReplicas"] == 2


def test_server_args_match_the_cli_and_the_mounted_files():
    from mutator.commands.cli import _parser

    objects = rendered("configured")
    [container] = pod_spec(objects)["containers"]
    args = _parser().parse_args(["serve", *container["args"]])  # the flags the server really takes
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args.config == f"{mounts['config']}/config.yaml"
    assert args.tls_cert.startswith(mounts["tls"] + "/") and args.tls_key.startswith(mounts["tls"] + "/")
    assert args.metrics_listen == ("0.0.0.0", 9090) and args.log_format == "json"
    assert container["image"] == "ghcr.io/nonroot-mutator/nonroot-mutator@sha256:" + "a" * 64
    service_ports = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports["metrics"]["port"] == 9090
    assert service_ports["https"]["targetPort"] == "https"


def test_config_values_render_a_config_the_server_accepts():
    objects = rendered("configured")
    configmap = next(c for c in find(objects, "ConfigMap") if "config.yaml" in c["data"])
    document = yaml.safe_load(configmap["data"]["config.yaml"])
    assert document == VALUE_SETS["configured"]["config"]
    parsed = server_config.from_mapping(document)
    registry = parsed.registry("registry.internal:5000")
    assert str(parsed.platform) == "linux/arm64" and registry.plain_http
    assert registry.mirrors == ("mirror.internal:5000",)
    empty = next(c for c in find(rendered("defaults"), "ConfigMap") if "config.yaml" in c["data"])
    assert server_config.from_mapping(yaml.safe_load(empty["data"]["config.yaml"])) == server_config.Config()
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] != one(rendered("defaults"), "Deployment")["spec"]["template"][
        "metadata"]["annotations"]["checksum/config"]


def test_docker_config_secret_is_mounted_where_the_config_says(tmp_path):
    objects = render({"credentials": {"dockerConfigSecret": "regcred"}, "config": {"cache_ttl_seconds": 5}})
    configmap = next(c for c in find(objects, "ConfigMap") if "config.yaml" in c["data"])
    document = yaml.safe_load(configmap["data"]["config.yaml"])
    [container] = pod_spec(tuple(objects))["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volume = next(v for v in pod_spec(tuple(objects))["volumes"] if v["name"] == "docker-config")
    assert volume["secret"] == {"secretName": "regcred",
                                "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
    assert document["docker_config"] == f"{mounts['docker-config']['mountPath']}/config.json"
    assert document["cache_ttl_seconds"] == 5
    # the key is the server's: with the file where the Secret puts it, the config loads
    (tmp_path / "config.json").write_text('{"auths": {}}')
    parsed = server_config.from_mapping({**document, "docker_config": str(tmp_path / "config.json")})
    assert parsed.docker_config == str(tmp_path / "config.json")


# --- RBAC -----------------------------------------------------------------------------------------


def rules(objects: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    return [rule for role in find(objects, "ClusterRole") + find(objects, "Role") for rule in role["rules"]]


def test_rbac_is_read_only_and_least_privilege():
    objects = rendered("defaults")
    assert rules(objects) == [
        {"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    ]
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    assert pod_spec(objects)["serviceAccountName"] == account["metadata"]["name"]


def test_pull_secrets_off_removes_every_secret_permission():
    objects = rendered("no-pull-secrets")
    assert rules(objects) == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
                              {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    assert server_config_of(objects).pull_secrets is False  # the server does not try without the RBAC
    assert server_config_of(rendered("defaults")).pull_secrets is True
    nothing = render({"pullSecrets": {"enabled": False}, "warmup": {"enabled": False}})
    assert not find(nothing, "ClusterRole") and not find(nothing, "ClusterRoleBinding")
    assert pod_spec(tuple(nothing))["automountServiceAccountToken"] is False
    assert server_config_of(tuple(nothing)).warmup is False


def server_config_of(objects: tuple[dict[str, Any], ...]) -> server_config.Config:
    configmap = next(c for c in find(objects, "ConfigMap") if "config.yaml" in c["data"])
    return server_config.from_mapping(yaml.safe_load(configmap["data"]["config.yaml"]))


# --- NetworkPolicy, ServiceMonitor ----------------------------------------------------------------


def test_network_policy_and_service_monitor_select_the_webhook_pods():
    objects = rendered("observed")
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {"https", "metrics"}
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"  # plain HTTP: no webhook TLS to scrape
    defaults = rendered("defaults")
    assert not find(defaults, "ServiceMonitor") and not find(defaults, "NetworkPolicy")


# --- metric names in the dashboard and the alerts -------------------------------------------------


def dashboard() -> dict[str, Any]:
    configmap = next(c for c in find(rendered("defaults"), "ConfigMap") if c["metadata"]["name"].endswith(
        "-dashboard"))
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    [document] = configmap["data"].values()
    return json.loads(document)


def dashboard_queries(board: dict[str, Any]) -> dict[str, list[str]]:
    queries = {panel["title"]: [t["expr"] for t in panel["targets"]] for panel in board["panels"]}
    for variable in board["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            inner = variable["query"]["query"]
            queries["$" + variable["name"]] = [re.sub(r"^label_values\((\w+),.*\)$", r"\1", inner)]
    return queries


def test_every_dashboard_query_names_a_metric_the_server_exports():
    exported = exported_series()
    used: set[str] = set()
    for title, exprs in dashboard_queries(dashboard()).items():
        assert exprs, title
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{title}: {expr}"
            unknown = names - exported.keys()
            assert not unknown, f"panel {title!r} queries {unknown}, not exported by the server"
            used |= {exported[n] for n in names}
    # and the dashboard shows every family the server exports
    assert used == set(exported.values())


def test_dashboard_shows_what_an_sre_looks_for():
    queries = dashboard_queries(dashboard())
    flat = "\n".join(e for exprs in queries.values() for e in exprs)
    latency = [e for e in flat.splitlines() if "admission_duration_seconds_bucket" in e]
    quantiles = {q for e in latency for q in re.findall(r"histogram_quantile\((0\.\d+)", e)}
    assert quantiles >= {"0.5", "0.95", "0.99"}
    assert re.search(r"sum by \([^)]*result[^)]*\) \(rate\(nonroot_mutator_admissions_total", flat)
    assert re.search(r'nonroot_mutator_cache_lookups_total\{[^}]*result=~"hit\|coalesced"', flat)
    assert re.search(r"by \(le, kind\) \(rate\(nonroot_mutator_registry_request_duration_seconds_b", flat)
    assert re.search(r"by \(kind, status_class\) \(rate\(nonroot_mutator_registry_requests_total", flat)
    assert "nonroot_mutator_inflight_lookups" in flat and "nonroot_mutator_warmup_images" in flat
    panel_ids = [p["id"] for p in dashboard()["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


def test_alerts_query_exported_metrics_and_cover_the_failure_modes():
    rule = one(rendered("observed"), "PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"NonrootMutatorDown", "NonrootMutatorHighRefusalRate", "NonrootMutatorAdmissionLatencyHigh",
            "NonrootMutatorRegistryErrors", "NonrootMutatorCacheHitRatioLow"} <= set(alerts)
    exported = exported_series()
    for name, alert in alerts.items():
        unknown = metric_names(alert["expr"]) - exported.keys() - PROMETHEUS_OWN
        assert not unknown, f"{name} queries {unknown}"
        assert f'job="{FULLNAME}"' in alert["expr"]  # the ServiceMonitor's job: the Service name
        assert alert["labels"]["severity"] in ("warning", "critical")
    assert "up{" in alerts["NonrootMutatorDown"]["expr"]
    assert "histogram_quantile(0.99" in alerts["NonrootMutatorAdmissionLatencyHigh"]["expr"]
    assert "{{ $value" in alerts["NonrootMutatorHighRefusalRate"]["annotations"]["summary"]


# --- the README ------------------------------------------------------------------------------------


def test_readme_values_table_lists_every_top_level_value():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Chart values", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    listed = {name for cell in first_cells for name in re.findall(r"`([A-Za-z]+)", cell)}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) - listed == set()
