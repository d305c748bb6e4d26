"""The Helm chart, rendered by the pinned helm binary: lint, schema, content, and bad values refused."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests import tools
from tests.helpers import ROOT, podpatterns_command
from webhook.catalog import restricted

CHART = ROOT / "charts" / "podpatterns"
NAMESPACE = "platform"
FULLNAME = "pp-podpatterns"
# The oldest the chart supports, a middle one, and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.28", "1.33", kubernetes_validate.latest_version().rsplit(".", 1)[0])
CA_BUNDLE = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="

# Each scenario: helm --set values. "default" is the chart as a platform team installs it.
SCENARIOS: dict[str, list[str]] = {
    "default": [],
    "cert-manager": ["certificates.mode=certManager"],
    "cert-manager-cluster-issuer": ["certificates.mode=certManager", "certificates.certManager.issuerRef.name=corp-ca",
                                    "certificates.certManager.issuerRef.kind=ClusterIssuer"],
    "existing-secret": ["certificates.mode=existingSecret", "certificates.existingSecret.name=my-tls",
                        f"certificates.existingSecret.caBundle={CA_BUNDLE}"],
    "single-replica": ["replicaCount=1", "podAntiAffinity=none"],
    "hard-anti-affinity": ["replicaCount=3", "podAntiAffinity=hard", "podDisruptionBudget.minAvailable=2"],
    "policy-guard": ["policyGuard.enabled=true", "webhook.failurePolicy=Ignore", "-f", "tests/policy/chart-values.yaml"],
    "custom-selectors": [
        "webhook.namespaceSelector.matchLabels.team=payments",
        "webhook.namespaceSelector.matchExpressions[0].key=tier",
        "webhook.namespaceSelector.matchExpressions[0].operator=In",
        "webhook.namespaceSelector.matchExpressions[0].values[0]=backend",
        "webhook.objectSelector.matchExpressions[0].key=podpatterns.io/skip",
        "webhook.objectSelector.matchExpressions[0].operator=DoesNotExist",
        "webhook.excludedNamespaces[0]=monitoring",
        "webhook.annotatedPodsOnly=true",
        "webhook.matchConditions[0].name=not-jobs",
        "webhook.matchConditions[0].expression=!has(object.metadata.ownerReferences)",
        "webhook.failurePolicy=Ignore",
        "webhook.timeoutSeconds=3",
        "settings.prefix=patterns.example.com",
    ],
    "plain-health-port": ["settings.health-port=9090", "settings.drain-seconds=10", "terminationGracePeriodSeconds=40"],
}

CERTIFICATES_FROM_OUTSIDE = {"cert-manager", "cert-manager-cluster-issuer", "existing-secret"}


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tools.helm()), *args], capture_output=True, text=True, timeout=120)


def _flags(settings: list[str]) -> list[str]:
    """--set for each value; "-f", FILE pairs (relative to the repository) pass through as value files."""
    flags, items = [], iter(settings)
    for item in items:
        flags += ["-f", str(ROOT / next(items))] if item == "-f" else ["--set", item]
    return flags


def render(settings: list[str], *extra: str) -> list[dict[str, Any]]:
    done = helm("template", "pp", str(CHART), "-n", NAMESPACE, *_flags(settings), *extra)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{len(matches)} {kind} {name or ''} rendered"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(SCENARIOS[request.param])


def test_helm_lint_passes_for_every_scenario():
    for name, settings in SCENARIOS.items():
        done = helm("lint", str(CHART), "--strict", *_flags(settings))
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"


def test_every_rendered_object_is_valid_for_three_kubernetes_versions(scenario):
    name, docs = scenario
    for doc in docs:
        if doc["apiVersion"].startswith("cert-manager.io/"):
            continue  # not a Kubernetes kind: checked in test_cert_manager_mode
        for version in KUBE_VERSIONS:
            if doc["kind"].startswith("ValidatingAdmissionPolicy") and version < "1.30":
                continue  # admissionregistration.k8s.io/v1 has it since 1.30: the guard needs that (README)
            kubernetes_validate.validate(doc, version, strict=True)


def test_rendering_is_deterministic_and_holds_no_key_material(scenario):
    name, docs = scenario
    assert render(SCENARIOS[name]) == docs  # GitOps: no drift between two renders
    text = yaml.safe_dump_all(docs)
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text


def test_the_webhook_configuration_is_safe_in_front_of_every_pod(scenario):
    name, docs = scenario
    webhook = find(docs, "MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["sideEffects"] == "None"
    assert webhook["matchPolicy"] == "Equivalent"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"], "scope": "Namespaced"}]
    assert 1 <= webhook["timeoutSeconds"] < 10
    assert webhook["clientConfig"]["service"] == {"name": FULLNAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
    excluded = webhook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
    assert {NAMESPACE, "kube-system"} <= set(excluded["values"])


def test_the_webhook_pods_meet_pod_security_restricted_with_a_read_only_root(scenario):
    name, docs = scenario
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    for container in pod["containers"]:
        assert restricted.container_violations(container) == []
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["resources"]["limits"] and container["resources"]["requests"]
        probes = {p: container[p]["httpGet"] for p in ("readinessProbe", "livenessProbe")}
        assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
        scheme = "HTTP" if name == "plain-health-port" else "HTTPS"  # a plain port only when asked for
        assert all(p["scheme"] == scheme for p in probes.values())
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # the only writable place: certificates are written there
    assert all(restricted.volume_violations(v) == [] for v in pod["volumes"])


def test_rbac_is_exactly_what_the_server_reads_and_writes(scenario):
    name, docs = scenario
    rbac = {d["kind"]: d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io/")}
    watch_namespaces = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
    for binding in [b for b in ("RoleBinding", "ClusterRoleBinding") if b in rbac]:
        assert rbac[binding]["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    if name in CERTIFICATES_FROM_OUTSIDE:
        # Certificates from cert-manager or the user: the server only watches Namespaces.
        assert sorted(rbac) == ["ClusterRole", "ClusterRoleBinding"]
        assert rbac["ClusterRole"]["rules"] == [watch_namespaces]
        return
    assert sorted(rbac) == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    assert rbac["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [f"{FULLNAME}-tls"], "verbs": ["get", "update"]},
    ]
    assert rbac["ClusterRole"]["rules"] == [
        watch_namespaces,
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": [FULLNAME], "verbs": ["get", "patch"]},
    ]


def test_default_install_is_highly_available_with_self_managed_certificates():
    docs = render([])
    deployment = find(docs, "Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert find(docs, "PodDisruptionBudget", FULLNAME)["spec"]["minAvailable"] == 1
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--cert-secret={FULLNAME}-tls" in args and f"--webhook-configuration={FULLNAME}" in args
    assert f"--service={FULLNAME}" in args and f"--namespace={NAMESPACE}" in args
    webhook = find(docs, "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["failurePolicy"] == "Fail"
    assert "caBundle" not in webhook["clientConfig"]  # the server writes it; helm upgrade keeps it
    assert "matchConditions" not in webhook and "objectSelector" not in webhook
    service = find(docs, "Service", FULLNAME)
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]


def test_ha_off_renders_no_disruption_budget_and_no_anti_affinity():
    docs = render(SCENARIOS["single-replica"])
    assert "PodDisruptionBudget" not in kinds(docs)
    assert "affinity" not in find(docs, "Deployment")["spec"]["template"]["spec"]
    hard = find(render(SCENARIOS["hard-anti-affinity"]), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard["podAntiAffinity"]


def test_custom_selectors_keep_the_exclusions_and_add_match_conditions():
    webhook = find(render(SCENARIOS["custom-selectors"]), "MutatingWebhookConfiguration")["webhooks"][0]
    assert webhook["namespaceSelector"] == {
        "matchLabels": {"team": "payments"},
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NAMESPACE, "kube-system", "monitoring"]},
            {"key": "tier", "operator": "In", "values": ["backend"]},
        ],
    }
    assert webhook["objectSelector"] == {"matchExpressions": [{"key": "podpatterns.io/skip", "operator": "DoesNotExist"}]}
    assert webhook["matchConditions"] == [
        {"name": "not-jobs", "expression": "!has(object.metadata.ownerReferences)"},
        {"name": "annotated-pods-only",
         "expression": "has(object.metadata.annotations) && 'patterns.example.com/inject' in object.metadata.annotations"},
    ]
    assert webhook["failurePolicy"] == "Ignore" and webhook["timeoutSeconds"] == 3


def test_cert_manager_mode_renders_a_ca_chain_and_the_inject_annotation():
    docs = render(SCENARIOS["cert-manager"])
    configuration = find(docs, "MutatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{FULLNAME}-serving"
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    serving = find(docs, "Certificate", f"{FULLNAME}-serving")
    assert serving["apiVersion"] == "cert-manager.io/v1"
    assert serving["spec"]["secretName"] == f"{FULLNAME}-tls"
    assert serving["spec"]["dnsNames"] == [FULLNAME, f"{FULLNAME}.{NAMESPACE}", f"{FULLNAME}.{NAMESPACE}.svc",
                                           f"{FULLNAME}.{NAMESPACE}.svc.cluster.local"]
    assert serving["spec"]["issuerRef"] == {"name": f"{FULLNAME}-ca", "kind": "Issuer"}
    ca = find(docs, "Certificate", f"{FULLNAME}-ca")["spec"]
    assert ca["isCA"] is True and ca["issuerRef"] == {"name": f"{FULLNAME}-selfsigned", "kind": "Issuer"}
    assert find(docs, "Issuer", f"{FULLNAME}-selfsigned")["spec"] == {"selfSigned": {}}
    assert find(docs, "Issuer", f"{FULLNAME}-ca")["spec"] == {"ca": {"secretName": f"{FULLNAME}-ca"}}
    assert _tls_volume(docs) == f"{FULLNAME}-tls"

    own_issuer = render(SCENARIOS["cert-manager-cluster-issuer"])
    assert "Issuer" not in kinds(own_issuer)
    assert find(own_issuer, "Certificate")["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}


def test_existing_secret_mode_mounts_it_and_writes_the_given_ca_bundle():
    docs = render(SCENARIOS["existing-secret"])
    assert find(docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"] == CA_BUNDLE
    assert _tls_volume(docs) == "my-tls"
    args = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--tls-cert=/etc/podpatterns/tls/tls.crt" in args and not any(a.startswith("--cert-secret") for a in args)
    assert "Certificate" not in kinds(docs) and "Secret" not in kinds(docs)


def _tls_volume(docs: list[dict[str, Any]]) -> str:
    volumes = find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    return next(v["secret"]["secretName"] for v in volumes if v["name"] == "tls")


def test_catalogue_and_settings_from_values_are_what_the_server_accepts(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "catalogue": {
            "stdout-tailer": _example_entry(),  # as a YAML string
            "as-object.yaml": yaml.safe_load(  # as an object
_example_entry().replace("name: tailer", "name: tailer-two")),
        },
        "settings": {"prefix": "patterns.example.com", "log-level": "debug", "kube-version": "1.28"},
    }))
    docs = render([], "-f", str(values))
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    for file, text in find(docs, "ConfigMap", f"{FULLNAME}-catalogue")["data"].items():
        (catalogue / file).write_text(text)
    assert sorted(p.name for p in catalogue.iterdir()) == ["as-object.yaml", "stdout-tailer.yaml"]
    listed = subprocess.run([*podpatterns_command(), "catalog", "list", "--catalog", str(catalogue)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "tailer  (" in listed.stdout and "tailer-two  (" in listed.stdout
    settings = yaml.safe_load(find(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]["settings.yaml"])
    assert settings == {"prefix": "patterns.example.com", "log-level": "debug", "kube-version": "1.28",
                        "max-body-bytes": 3145728, "drain-seconds": 5, "shutdown-timeout-seconds": 10,
                        "idle-timeout-seconds": 120, "read-timeout-seconds": 10, "max-head-bytes": 32768,
                        "health-port": None}
    # Every chart setting is a flag the server takes (the chart server test runs them for real).
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(find(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]["settings.yaml"])
    from webhook.cli.commands import _parser
    from webhook.cli.settingsfile import flags
    parser = _parser()
    parsed = parser.parse_args(["serve", *flags(str(settings_file), parser.serve_parser)])
    assert (parsed.drain_seconds, parsed.idle_timeout_seconds, parsed.health_port) == (5, 120, None)


def _example_entry() -> str:
    return """apiVersion: podpatterns.io/v1alpha1
kind: PatternTemplate
metadata:
  name: tailer
spec:
  pattern: sidecar
  description: Prints the app's log file on its own stdout.
  containers:
  - name: tailer
    image: busybox:1.37
    command: ["tail", "-F", "/var/log/app/app.log"]
    resources:
      requests: {cpu: 10m, memory: 16Mi}
      limits: {cpu: 50m, memory: 32Mi}
    securityContext:
      runAsNonRoot: true
      runAsUser: 65532
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: ["ALL"]}
      seccompProfile: {type: RuntimeDefault}
"""


@pytest.mark.parametrize("setting, error", [
    ("webhook.failurPolicy=Fail", "additional properties 'failurPolicy' not allowed"),
    ("webhook.failurePolicy=Never", "value must be one of 'Fail', 'Ignore'"),
    ("webhook.timeoutSeconds=60", "maximum: got 60, want 30"),
    ("replicaCount=two", "got string, want integer"),
    ("replicaCount=0", "minimum: got 0, want 1"),
    ("certificates.mode=vault", "value must be one of 'selfManaged', 'certManager', 'existingSecret'"),
    ("certificates.mode=existingSecret", "/certificates/existingSecret"),
    ("settings.colour=red", "additional properties 'colour' not allowed"),
    ("settings.log-level=loud", "value must be one of 'debug', 'info', 'warning', 'error'"),
    ("image.digest=latest", "/image/digest"),
    ("resources.limits.cpu=lots", "/resources/limits/cpu"),
    ("webhook.excludedNamespaces[0]=Not_A_Namespace", "/webhook/excludedNamespaces/0"),
    ("webhook.namespaceSelector.matchExpressions[0].operator=Equals", "value must be one of 'In', 'NotIn'"),
    ("podAntiAffinity=sometimes", "value must be one of 'soft', 'hard', 'none'"),
    ("settings.idle-timeout-seconds=60", "exclusiveMinimum: got 60, want 90"),
    ("settings.read-timeout-seconds=0", "exclusiveMinimum: got 0, want 0"),
    ("settings.health-port=70000", "maximum: got 70,000, want 65,535"),
])
def test_misspelt_or_mistyped_values_are_rejected_with_a_clear_error(setting, error):
    done = helm("template", "pp", str(CHART), "--set", setting)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr and error in done.stderr, done.stderr


@pytest.mark.parametrize("settings, error", [
    (["terminationGracePeriodSeconds=12"], "terminationGracePeriodSeconds (12) must exceed settings.drain-seconds + "
                                           "settings.shutdown-timeout-seconds (15)"),
    (["settings.drain-seconds=20", "settings.shutdown-timeout-seconds=10"], "(30)"),
    (["settings.health-port=8443"], "settings.health-port must differ from service.targetPort"),
])
def test_settings_that_would_break_shutdown_or_tls_are_refused_at_render(settings, error):
    done = helm("template", "pp", str(CHART), *_flags(settings))
    assert done.returncode != 0 and error in done.stderr, done.stderr


def test_the_probes_use_https_unless_a_plain_health_port_is_set():
    def probes(docs):
        container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        return {container[name]["httpGet"]["port"] + "/" + container[name]["httpGet"]["scheme"]
                for name in ("startupProbe", "readinessProbe", "livenessProbe")}

    assert probes(render([])) == {"https/HTTPS"}
    docs = render(SCENARIOS["plain-health-port"])
    assert probes(docs) == {"health/HTTP"}
    settings = yaml.safe_load(find(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]["settings.yaml"])
    assert settings["health-port"] == 9090 and settings["drain-seconds"] == 10


def test_notes_tell_how_to_annotate_a_pod_and_check_it():
    done = helm("install", "pp", str(CHART), "-n", NAMESPACE, "--dry-run=client")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert 'podpatterns.io/inject: "log-shipper"' in notes
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes
    assert "podpatterns\\.io/status" in notes


def test_the_chart_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(tree: dict[str, Any], prefix: str = ""):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            # A map of free-form entries (resources, selectors…) is documented as one value.
            if isinstance(value, dict) and value and path not in ("resources",):
                yield from leaves(value, f"{path}.")
            else:
                yield path

    missing = [path for path in leaves(values) if f"| `{path}` |" not in readme]
    assert missing == []


# --- The policy in the chart: what the server accepts, and the guard's CEL as the apiserver evaluates it

def _cel(expression: str, pod: dict[str, Any]) -> bool:
    import celpy  # cel-python: a CEL implementation independent of the chart and the server

    environment = celpy.Environment()
    return bool(environment.program(environment.compile(expression)).evaluate({"object": celpy.json_to_cel(pod)}))


def _chart_policy(tmp_path: Path) -> Path:
    docs = render(SCENARIOS["policy-guard"])
    path = tmp_path / "policy.yaml"
    path.write_text(find(docs, "ConfigMap", f"{FULLNAME}-policy")["data"]["policy.yaml"])
    return path


def test_the_policy_from_values_is_what_the_server_accepts(tmp_path):
    done = subprocess.run([*podpatterns_command(), "policy", "validate", str(_chart_policy(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ok: rule prod-logs: inject log-shipper (mandatory)" in done.stdout
    empty = render([])
    assert yaml.safe_load(find(empty, "ConfigMap", f"{FULLNAME}-policy")["data"]["policy.yaml"])["spec"] == {}


def test_the_policy_guard_denies_exactly_the_pods_the_webhook_did_not_inject(tmp_path):
    docs = render(SCENARIOS["policy-guard"])
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    assert [p["metadata"]["name"] for p in policies] == [f"{FULLNAME}-prod-logs"]  # only the mandatory rule
    binding = find(docs, "ValidatingAdmissionPolicyBinding", f"{FULLNAME}-prod-logs")["spec"]
    assert binding["validationActions"] == ["Deny"] and binding["policyName"] == f"{FULLNAME}-prod-logs"
    assert binding["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                              "values": [NAMESPACE, "kube-system"]}],
    }
    assert binding["matchResources"]["objectSelector"] == {"matchExpressions": [{"key": "batch", "operator": "DoesNotExist"}]}
    (validation,) = policies[0]["spec"]["validations"]

    # A Pod as the webhook leaves it (podpatterns inject with the chart's own policy) passes the guard;
    # the same Pod created while the webhook was down (failurePolicy Ignore) is denied.
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"env": "prod"}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}},
    ]))
    injected = subprocess.run([*podpatterns_command(), "inject", "-f", str(manifest), "--policy", str(_chart_policy(tmp_path))],
                              capture_output=True, text=True, timeout=60)
    assert injected.returncode == 0, injected.stderr
    pod = [d for d in yaml.safe_load_all(injected.stdout) if d["kind"] == "Pod"][0]
    assert "log-shipper" in pod["metadata"]["annotations"]["podpatterns.io/status"]
    assert _cel(validation["expression"], pod) is True
    plain = [d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Pod"][0]
    assert _cel(validation["expression"], plain) is False
    other = {"metadata": {"annotations": {"podpatterns.io/status": '[{"entry":"json-log-adapter","pattern":"adapter","digest":"x"}]'}}}
    assert _cel(validation["expression"], other) is False


def test_annotated_pods_only_sends_exactly_the_annotated_pods():
    webhook = find(render(SCENARIOS["custom-selectors"]), "MutatingWebhookConfiguration")["webhooks"][0]
    condition = next(c["expression"] for c in webhook["matchConditions"] if c["name"] == "annotated-pods-only")
    assert _cel(condition, {"metadata": {"annotations": {"patterns.example.com/inject": "log-shipper"}}}) is True
    assert _cel(condition, {"metadata": {"annotations": {"podpatterns.io/inject": "log-shipper"}}}) is False
    assert _cel(condition, {"metadata": {}}) is False
