"""What the chart gives an operator: the helm test hook, the ServiceMonitor and PrometheusRule, the NetworkPolicy —
rendered by the pinned helm, linted, validated (Kubernetes kinds strictly for the chart's versions, the Prometheus
Operator's kinds against a structural schema of the fields used), and the alerts' metrics checked against what a
running server exports."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, Server
from tests.kubeapi import KubeApi
from tests.test_chart import CHART, FULLNAME, KUBE_VERSIONS, NAMESPACE, _flags, find, helm
from tests.test_chart_server import access, allowed, entrypoint
from webhook.catalog import restricted

MONITORING = ["settings.health-port=9090", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
              "metrics.serviceMonitor.labels.release=prometheus", "metrics.prometheusRule.labels.release=prometheus",
              "metrics.prometheusRule.runbookUrl=https://example.com/podpatterns/chart#runbook"]
NETWORK = ["networkPolicy.enabled=true", "networkPolicy.apiserver[0].ipBlock.cidr=10.0.0.10/32",
           "networkPolicy.apiserver[1].ipBlock.cidr=10.0.0.11/32"]
SCENARIOS = {
    "default": [],
    "monitoring": MONITORING,
    "network-policy": NETWORK,
    "everything": [*MONITORING, *NETWORK, "tests.namespace=shop", "tests.entry=json-log-adapter"],
}
# Metrics the alerts read that podpatterns does not export, and who does.
EXTERNAL_METRICS = {"kube_deployment_status_replicas_available": "kube-state-metrics"}
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "monitoring.coreos.com-v1.json").read_text())
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool"}


def render_all(settings: list[str]) -> list[dict[str, Any]]:
    """As `helm template` prints it: the objects helm install creates and the helm test hooks."""
    done = helm("template", "pp", str(CHART), "-n", NAMESPACE, *_flags(settings))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def hooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_all(SCENARIOS[request.param])


def test_helm_lint_passes(scenario):
    name, _ = scenario
    done = helm("lint", str(CHART), "--strict", *_flags(SCENARIOS[name]))
    assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"


def test_kubernetes_objects_are_valid_for_the_charts_versions(scenario):
    _, docs = scenario
    for doc in docs:
        if doc["apiVersion"].startswith(("cert-manager.io/", "monitoring.coreos.com/")):
            continue
        for version in KUBE_VERSIONS:
            if doc["kind"].startswith("ValidatingAdmissionPolicy") and version < "1.30":
                continue
            kubernetes_validate.validate(doc, version, strict=True)


def test_prometheus_operator_objects_match_the_structural_schema(scenario):
    name, docs = scenario
    found = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(d["kind"] for d in found) == (["PrometheusRule", "ServiceMonitor"] if name in ("monitoring", "everything") else [])
    for doc in found:
        jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_the_structural_schema_refuses_what_the_operator_would_drop_or_refuse():
    docs = render_all(MONITORING)
    monitor, rule = find(docs, "ServiceMonitor"), find(docs, "PrometheusRule")
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert validator.is_valid(monitor) and validator.is_valid(rule)
    for broken in (
        {**monitor, "spec": {**monitor["spec"], "endpoints": [{**monitor["spec"]["endpoints"][0], "intervall": "30s"}]}},
        {**monitor, "spec": {**monitor["spec"], "endpoints": [{**monitor["spec"]["endpoints"][0], "interval": "30 s"}]}},
        {**monitor, "spec": {"endpoints": monitor["spec"]["endpoints"]}},  # no selector
        {**rule, "spec": {"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "up", "for": "five minutes"}]}]}},
        {**rule, "spec": {"groups": [{"name": "x", "rules": [{"alert": "A", "expression": "up"}]}]}},
    ):
        assert not validator.is_valid(broken), broken


# --- the helm test hook

def test_the_test_hook_is_a_restricted_pod_with_rbac_for_dry_run_pods_in_one_namespace():
    docs = render_all([])
    hooked = hooks(docs)
    assert sorted((d["kind"], d["metadata"]["namespace"]) for d in hooked) == [
        ("Pod", NAMESPACE), ("Role", "default"), ("RoleBinding", "default"), ("ServiceAccount", NAMESPACE)]
    name = f"{FULLNAME}-test"
    assert {d["metadata"]["name"] for d in hooked} == {name}
    pod = find(hooked, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"  # kept for --logs
    for doc in hooked:
        if doc["kind"] != "Pod":  # RBAC first, gone once the test passed
            assert doc["metadata"]["annotations"]["helm.sh/hook-weight"] == "-1"
            assert doc["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == name and spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 65532
    (container,) = spec["containers"]
    assert restricted.container_violations(container) == []
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert all(restricted.volume_violations(v) == [] for v in spec["volumes"])
    # The image's own command, instead of its ENTRYPOINT (serve); arguments the CLI accepts.
    assert container["command"][0] == entrypoint()[0] == "podpatterns"
    assert container["image"] == find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    from webhook.cli.commands import _parser
    args = _parser().parse_args(container["command"][1:])
    assert (args.namespace, args.entry, args.prefix) == ("default", "log-shipper", "podpatterns.io")
    # Not one of the webhook's Pods: its ReplicaSet, Service and PodDisruptionBudget do not select it.
    selector = find(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    role, binding = find(hooked, "Role"), find(hooked, "RoleBinding")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    assert find(hooked, "ServiceAccount")["automountServiceAccountToken"] is False  # only the test Pod mounts it
    assert hooks(render_all(["tests.enabled=false"])) == []


def test_the_test_hooks_rbac_is_exactly_what_selftest_uses(tmp_path, capsys):
    from webhook.cli import commands as cli

    docs = render_all(["tests.namespace=shop"])
    pod = find(hooks(docs), "Pod")
    rules = [(d["metadata"]["namespace"], rule) for d in hooks(docs) if d["kind"] == "Role" for rule in d["rules"]]
    with KubeApi() as api:
        capsys.readouterr()
        code = cli.main([*pod["spec"]["containers"][0]["command"][1:], "--kubeconfig", str(api.kubeconfig(tmp_path / "k"))])
        requests = [r for r in api.requests if access(r.method, r.path, r.query) is not None]
    assert code == 1, capsys.readouterr()  # the stand-in calls no webhook: not injected
    assert [access(r.method, r.path, r.query) for r in requests] == [("create", "", "pods", "shop", "")]
    assert all(allowed(rules, access(r.method, r.path, r.query)) for r in requests)


@pytest.mark.parametrize("settings", [["tests.namespace=platform"], ["tests.namespace=kube-system"],
                                      ["webhook.excludedNamespaces[0]=default"]])
def test_an_excluded_test_namespace_is_a_warning_not_a_failed_install(settings):
    done = helm("install", "pp", str(CHART), "-n", NAMESPACE, "--dry-run=client", *_flags(settings))
    assert done.returncode == 0, done.stderr
    assert "is excluded from the webhook, so helm test will fail: set\n   tests.namespace" in done.stdout
    fine = helm("install", "pp", str(CHART), "-n", NAMESPACE, "--dry-run=client")
    assert "helm test pp -n platform --logs" in fine.stdout and "WARNING" not in fine.stdout


@pytest.mark.parametrize("settings, error", [
    (["metrics.serviceMonitor.enabled=true"], "metrics.serviceMonitor.enabled needs settings.health-port"),
    (["metrics.prometheusRule.enabled=true"], "metrics.prometheusRule.enabled needs metrics.serviceMonitor.enabled"),
    (["networkPolicy.enabled=true"], "networkPolicy.apiserver is required when networkPolicy.enabled"),
])
def test_settings_that_cannot_work_are_refused_at_render(settings, error):
    done = helm("template", "pp", str(CHART), "-n", NAMESPACE, *_flags(settings))
    assert done.returncode != 0 and error in done.stderr, done.stderr


@pytest.mark.parametrize("setting, error", [
    ("metrics.serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
    ("metrics.serviceMonitor.interval=30 seconds", "/metrics/serviceMonitor/interval"),
    ("networkPolicy.apiserver[0].cidr=10.0.0.10/32", "additional properties 'cidr' not allowed"),
    ("tests.namespace=Not_A_Namespace", "/tests/namespace"),
    ("metrics.prometheusRule.runbookUrl=wiki/podpatterns", "/metrics/prometheusRule/runbookUrl"),
])
def test_misspelt_operator_values_are_rejected(setting, error):
    done = helm("template", "pp", str(CHART), "--set", setting)
    assert done.returncode != 0 and error in done.stderr, done.stderr


# --- ServiceMonitor and PrometheusRule

def test_the_service_monitor_scrapes_the_plain_health_port_of_the_webhook_pods():
    docs = render_all(MONITORING)
    monitor = find(docs, "ServiceMonitor")
    services = [d for d in docs if d["kind"] == "Service"]
    selected = [s for s in services if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == [f"{FULLNAME}-metrics"]  # not the webhook's TLS Service
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "30s"}
    (port,) = selected[0]["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == 9090
    deployment = find(docs, "Deployment")
    assert selected[0]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "health", "containerPort": 9090, "protocol": "TCP"} in container["ports"]
    assert port["targetPort"] == "health"


def test_every_alert_has_a_runbook_row_and_reads_metrics_the_server_exports(tmp_path):
    rule = find(render_all(MONITORING), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert sorted(alerts) == sorted(_runbook_rows())
    server = Server(tmp_path, "--quiet")
    try:
        exported = _exported(server.client.get("/metrics").text)
    finally:
        server.stop()
    used = set()
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert alert["annotations"]["runbook_url"] == "https://example.com/podpatterns/chart#runbook"
        assert alert["annotations"]["summary"], name
        names = metric_names(alert["expr"])
        assert names, name
        for metric in names:
            assert metric in exported or metric in EXTERNAL_METRICS, f"{name}: {metric} is not exported"
            if metric.startswith("podpatterns_"):
                # Only the ServiceMonitor's series of this release.
                assert f'{metric}{{' in alert["expr"] and f'job="{FULLNAME}-metrics",namespace="{NAMESPACE}"' in alert["expr"]
        used |= names
    assert used & set(EXTERNAL_METRICS) == set(EXTERNAL_METRICS)  # the list says what is really read
    assert {"podpatterns_config_last_reload_success", "podpatterns_admission_requests_total",
            "podpatterns_audit_findings", "podpatterns_certificate_expiry_timestamp_seconds"} <= used


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, aggregations, keywords, label
    names (in braces or by/without lists), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][\w:]*", text):
        if match.group(0) in PROMQL_WORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(match.group(0))
    return names


def test_metric_names_are_read_out_of_promql():
    assert metric_names('sum by (namespace) (rate(a_total{x="y z",job="j"}[10m] offset 1h)) > 3 * b and c < 14 * 24') == {
        "a_total", "b", "c"}
    assert metric_names("min(x > 0) - time() < 1") == {"x"}


def _exported(text: str) -> set[str]:
    """Every series name of an exposition, and each family's name (a family declared without series yet, such as a
    labelled gauge no pass has set, is exported by name)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def _runbook_rows() -> list[str]:
    section = (CHART / "README.md").read_text().split("#### Runbook", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `(Podpatterns\w+)` \(", section, re.M)


# --- NetworkPolicy

def test_the_network_policy_admits_the_apiserver_and_prometheus_only():
    docs = render_all([*MONITORING, *NETWORK])
    policy = find(docs, "NetworkPolicy")
    deployment = find(docs, "Deployment")
    assert policy["spec"]["podSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    apiserver, monitoring = policy["spec"]["ingress"]
    assert apiserver["from"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}, {"ipBlock": {"cidr": "10.0.0.11/32"}}]
    assert apiserver["ports"] == [{"port": "https", "protocol": "TCP"}, {"port": "health", "protocol": "TCP"}]
    assert monitoring == {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                          "ports": [{"port": "health", "protocol": "TCP"}]}
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} <= ports
    # Without a health port or a ServiceMonitor: the webhook port, from the apiserver, and nothing else.
    plain = find(render_all(NETWORK), "NetworkPolicy")["spec"]["ingress"]
    assert plain == [{"from": apiserver["from"], "ports": [{"port": "https", "protocol": "TCP"}]}]
    assert "NetworkPolicy" not in {d["kind"] for d in render_all([])}
