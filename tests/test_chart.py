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
        "webhook.matchConditions[0].name=not-jobs",
        "webhook.matchConditions[0].expression=!has(object.metadata.ownerReferences)",
        "webhook.failurePolicy=Ignore",
        "webhook.timeoutSeconds=3",
        "settings.prefix=patterns.example.com",
    ],
    "plain-health-port": ["settings.health-port=9090", "settings.drain-seconds=10", "terminationGracePeriodSeconds=40"],
    # Every built-in and a catalogue entry mandatory, rules whose scopes nest and one that selects everything.
    "guard-everything": ["-f", "charts/podpatterns/ci/guard-values.yaml"],
    # The background audit writing PolicyReports, with the chart's own CRD (tests/test_chart_audit.py runs it).
    "audit": ["audit.interval=300", "audit.writeReports=true", "audit.installPolicyReportCRD=true",
              "webhook.excludedNamespaces[0]=monitoring"],
    # Only the built-ins and the catalogue value: the cluster's PatternTemplates are not watched.
    "no-patterntemplate-watch": ["patternTemplateWatch.enabled=false"],
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
    """What `helm install` creates; the `helm test` hook's objects are tests/test_chart_operator.py's."""
    done = helm("template", "pp", str(CHART), "-n", NAMESPACE, "--skip-tests", *_flags(settings), *extra)
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
    # Which Pods each entry sees is tests/test_chart_scope.py's; here, what every entry has in common.
    name, docs = scenario
    webhooks = find(docs, "MutatingWebhookConfiguration", FULLNAME)["webhooks"]
    names = [w["name"] for w in webhooks]
    assert names[:2] == ["inject.podpatterns.io", "namespace.inject.podpatterns.io"]
    assert names[-1] == "update.podpatterns.io" and len(set(names)) == len(names)
    assert all(n.endswith(".rule.podpatterns.io") for n in names[2:-1])
    for webhook in webhooks:
        assert webhook["reinvocationPolicy"] == "IfNeeded"
        assert webhook["sideEffects"] == "None"
        assert webhook["matchPolicy"] == "Equivalent"
        assert webhook["admissionReviewVersions"] == ["v1"]
        # The Pod itself only: subresources (ephemeralcontainers, status, resize…) are never sent.
        operation = "UPDATE" if webhook["name"] == "update.podpatterns.io" else "CREATE"
        assert webhook["rules"] == [{"operations": [operation], "apiGroups": [""], "apiVersions": ["v1"],
                                     "resources": ["pods"], "scope": "Namespaced"}]
        assert 1 <= webhook["timeoutSeconds"] < 10
        assert webhook["clientConfig"]["service"] == {"name": FULLNAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
        excluded = webhook["namespaceSelector"]["matchExpressions"][0]
        assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
        assert {NAMESPACE, "kube-system", "kube-public", "kube-node-lease"} <= set(excluded["values"])
        assert len(webhook.get("matchConditions", [])) <= 64  # the apiserver's limit


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
    # list+watch for the cache, get for a Namespace the cache has not seen yet.
    watch_namespaces = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}
    for binding in [b for b in ("RoleBinding", "ClusterRoleBinding") if b in rbac]:
        assert rbac[binding]["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    # The PatternTemplate watch (on by default): list+watch them, and a merge patch of their status — no get, no
    # update of the objects themselves (tests/test_patterntemplate_status.py checks the server sends nothing else).
    args = find(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]["args"]
    rules = rbac["ClusterRole"]["rules"]
    watched = [{"apiGroups": ["podpatterns.io"], "resources": ["patterntemplates"], "verbs": ["list", "watch"]},
               {"apiGroups": ["podpatterns.io"], "resources": ["patterntemplates/status"], "verbs": ["patch"]}]
    if name == "no-patterntemplate-watch":
        assert "--watch-patterntemplates" not in args
        assert not [rule for rule in rules if "podpatterns.io" in rule["apiGroups"]]
    else:
        assert "--watch-patterntemplates" in args
        assert rules[1:3] == watched
        # The rest is what the scenario renders without it (a copy: the documents are shared by the scenario's tests).
        rbac["ClusterRole"] = {**rbac["ClusterRole"], "rules": rules[:1] + rules[3:]}
    if name == "audit":
        # The background audit lists Pods and keeps its PolicyReports (README, "Background audit").
        assert rbac["ClusterRole"]["rules"][-3:] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": ["list", "create"]},
            {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "resourceNames": ["podpatterns-audit"],
             "verbs": ["get", "update", "delete"]},
        ]
        # The rest is the default install's (a copy: the rendered documents are shared by the scenario's tests).
        rbac["ClusterRole"] = {**rbac["ClusterRole"], "rules": rbac["ClusterRole"]["rules"][:-3]}
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
        # The caBundle of the ValidatingWebhookConfiguration of PatternTemplates (tests/test_chart_validating.py).
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
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
    for webhook in find(docs, "MutatingWebhookConfiguration")["webhooks"]:
        assert webhook["failurePolicy"] == "Fail"
        assert "caBundle" not in webhook["clientConfig"]  # the server writes it into each; helm upgrade keeps it
        assert "objectSelector" not in webhook
    service = find(docs, "Service", FULLNAME)
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]


def test_ha_off_renders_no_disruption_budget_and_no_anti_affinity():
    docs = render(SCENARIOS["single-replica"])
    assert "PodDisruptionBudget" not in kinds(docs)
    assert "affinity" not in find(docs, "Deployment")["spec"]["template"]["spec"]
    hard = find(render(SCENARIOS["hard-anti-affinity"]), "Deployment")["spec"]["template"]["spec"]["affinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard["podAntiAffinity"]


def test_custom_selectors_keep_the_exclusions_and_narrow_every_webhook():
    webhooks = {w["name"]: w for w in find(render(SCENARIOS["custom-selectors"]), "MutatingWebhookConfiguration")["webhooks"]}
    excluded = {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": [NAMESPACE, "kube-system", "kube-public", "kube-node-lease", "monitoring"]}
    tier = {"key": "tier", "operator": "In", "values": ["backend"]}
    not_opted_in = {"key": "patterns.example.com/injection", "operator": "NotIn", "values": ["enabled"]}
    asks = "has(object.metadata.annotations) && 'patterns.example.com/inject' in object.metadata.annotations"
    not_jobs = {"name": "not-jobs", "expression": "!has(object.metadata.ownerReferences)"}
    assert webhooks["inject.podpatterns.io"]["namespaceSelector"] == {
        "matchLabels": {"team": "payments"}, "matchExpressions": [excluded, tier, not_opted_in]}
    assert webhooks["inject.podpatterns.io"]["matchConditions"] == [
        {"name": "pod-asks-by-annotation", "expression": asks}, not_jobs]
    assert webhooks["namespace.inject.podpatterns.io"]["namespaceSelector"] == {
        "matchLabels": {"team": "payments", "patterns.example.com/injection": "enabled"},
        "matchExpressions": [excluded, tier]}
    assert webhooks["namespace.inject.podpatterns.io"]["matchConditions"] == [not_jobs]
    assert webhooks["update.podpatterns.io"]["namespaceSelector"] == {
        "matchLabels": {"team": "payments"}, "matchExpressions": [excluded, tier]}
    assert webhooks["update.podpatterns.io"]["matchConditions"] == [
        {"name": "pod-was-injected",
         "expression": "has(oldObject.metadata.annotations) && 'patterns.example.com/status' in oldObject.metadata.annotations"},
        not_jobs]
    for webhook in webhooks.values():
        assert webhook["objectSelector"] == {"matchExpressions": [{"key": "podpatterns.io/skip", "operator": "DoesNotExist"}]}
        assert webhook["failurePolicy"] == "Ignore" and webhook["timeoutSeconds"] == 3


def test_policy_rules_get_webhook_entries_narrowed_by_their_selectors():
    webhooks = {w["name"]: w for w in find(render(SCENARIOS["guard-everything"]), "MutatingWebhookConfiguration")["webhooks"]}
    rule = webhooks["tailed.rule.podpatterns.io"]
    assert rule["objectSelector"] == {"matchLabels": {"tail": "yes"}}
    assert rule["namespaceSelector"]["matchExpressions"][1:] == [
        {"key": "podpatterns.io/injection", "operator": "NotIn", "values": ["enabled"]}]
    assert rule["matchConditions"] == [{"name": "pod-does-not-ask-by-annotation", "expression":
        "!(has(object.metadata.annotations) && 'podpatterns.io/inject' in object.metadata.annotations)"}]
    assert webhooks["prod-everything.rule.podpatterns.io"]["namespaceSelector"]["matchLabels"] == {"env": "prod"}
    assert "prod-batch-limits.rule.podpatterns.io" not in webhooks  # its scope is inside prod-everything's


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
                        "namespace-lookup-timeout-seconds": 2, "health-port": None, "image-registry": None,
                        "image-pull-secret": []}
    # Every chart setting is a flag the server takes (the chart server test runs them for real).
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(find(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]["settings.yaml"])
    from webhook.cli.commands import _parser
    from webhook.cli.settingsfile import flags
    parser = _parser()
    parsed = parser.parse_args(["serve", *flags(str(settings_file), parser.serve_parser)])
    assert (parsed.drain_seconds, parsed.idle_timeout_seconds, parsed.health_port) == (5, 120, None)
    assert parsed.namespace_lookup_timeout_seconds == 2


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
    ("settings.namespace-lookup-timeout-seconds=0", "exclusiveMinimum: got 0, want 0"),
    ("settings.namespace-lookup-timeout-seconds=30", "exclusiveMaximum: got 30, want 30"),
    ("namespaces.beforeSync=inject", "value must be one of 'fail', 'skip'"),
    # Gone: the webhook's scope is now the Pods that use podpatterns (README, "Scope").
    ("webhook.annotatedPodsOnly=true", "additional properties 'annotatedPodsOnly' not allowed"),
    ("policyGuard.entries.log-shipper[0].name=log-shipper", "missing property 'image'"),
    ("policyGuard.entries.log-shipper[0].image=busybox:${params.tag}", "/policyGuard/entries/log-shipper/0/image"),
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
    (["settings.namespace-lookup-timeout-seconds=5"], "settings.namespace-lookup-timeout-seconds (5) must be less "
                                                      "than webhook.timeoutSeconds (5)"),
    (["settings.namespace-lookup-timeout-seconds=3", "webhook.timeoutSeconds=2"], "(3) must be less than"),
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
    # Which Pods the webhook sees, and how a Namespace opts in (README, "Scope").
    assert "kubectl label namespace NS podpatterns.io/injection=enabled" in notes
    assert "Any other Pod is created as if podpatterns were not installed, even while no replica is ready." in notes
    assert f"Pods in {NAMESPACE}, kube-system, kube-public, kube-node-lease are never sent to the webhook." in notes
    guarded = helm("install", "pp", str(CHART), "-n", NAMESPACE, "--dry-run=client", *_flags(SCENARIOS["guard-everything"]))
    assert guarded.returncode == 0, guarded.stderr
    assert "policy rules tailed: every namespace, Pods {\"matchLabels\":{\"tail\":\"yes\"}}" in guarded.stdout
    assert "checks the mandatory rules prod-everything, tailed" in guarded.stdout


def test_the_chart_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(tree: dict[str, Any], prefix: str = ""):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            # A map of free-form entries (resources, selectors…) is documented as one value.
            if isinstance(value, dict) and value and path not in ("resources", "policyGuard.entries"):
                yield from leaves(value, f"{path}.")
            else:
                yield path

    missing = [path for path in leaves(values) if f"| `{path}` |" not in readme]
    assert missing == []


# --- The policy in the chart: what the server accepts, and the guard's objects (its CEL, evaluated as the
# apiserver does, is tests/test_chart_scope.py's)

def _chart_policy(tmp_path: Path, scenario: str = "policy-guard") -> Path:
    docs = render(SCENARIOS[scenario])
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
    # The guard scenario's policy and catalogue (charts/podpatterns/ci/guard-values.yaml) load together too.
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    for file, text in find(render(SCENARIOS["guard-everything"]), "ConfigMap", f"{FULLNAME}-catalogue")["data"].items():
        (catalogue / file).write_text(text)
    done = subprocess.run([*podpatterns_command(), "policy", "validate", str(_chart_policy(tmp_path, "guard-everything")),
                           "--catalog", str(catalogue)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ok: rule tailed: inject tailer (mandatory)" in done.stdout


def test_the_policy_guard_is_one_policy_and_binding_per_mandatory_rule_in_the_webhooks_scope():
    docs = render(SCENARIOS["policy-guard"])
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    assert [p["metadata"]["name"] for p in policies] == [f"{FULLNAME}-prod-logs"]  # only the mandatory rule
    spec = policies[0]["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]
    assert [v["name"] for v in spec["variables"]] == ["mirror", "holds", "heldBefore"]
    binding = find(docs, "ValidatingAdmissionPolicyBinding", f"{FULLNAME}-prod-logs")["spec"]
    assert binding["validationActions"] == ["Deny"] and binding["policyName"] == f"{FULLNAME}-prod-logs"
    assert binding["matchResources"]["namespaceSelector"] == {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                              "values": [NAMESPACE, "kube-system", "kube-public", "kube-node-lease"]}],
    }
    assert binding["matchResources"]["objectSelector"] == {"matchExpressions": [{"key": "batch", "operator": "DoesNotExist"}]}
    # The webhook's own selectors and conditions narrow the guard as they narrow the webhook.
    narrowed = render([*SCENARIOS["policy-guard"], "webhook.namespaceSelector.matchLabels.team=payments",
                       "webhook.objectSelector.matchLabels.tier=web", "webhook.excludedNamespaces[0]=monitoring",
                       "webhook.matchConditions[0].name=not-jobs",
                       "webhook.matchConditions[0].expression=!has(object.metadata.ownerReferences)"])
    resources = find(narrowed, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]
    assert resources["namespaceSelector"]["matchLabels"] == {"team": "payments", "env": "prod"}
    assert "monitoring" in resources["namespaceSelector"]["matchExpressions"][0]["values"]
    assert resources["objectSelector"]["matchLabels"] == {"tier": "web"}
    assert find(narrowed, "ValidatingAdmissionPolicy")["spec"]["matchConditions"] == [
        {"name": "not-jobs", "expression": "!has(object.metadata.ownerReferences)"}]
    assert "ValidatingAdmissionPolicy" not in kinds(render(["-f", "tests/policy/chart-values.yaml"]))  # guard off
    # A mandatory rule being rolled out (enforcement warn or audit) admits Pods lacking its entries: no guard.
    for enforcement, guarded in (("warn", []), ("audit", []), ("enforce", [f"{FULLNAME}-prod-logs"])):
        rolled = render([*SCENARIOS["policy-guard"], f"policy.rules[0].enforcement={enforcement}"])
        assert [p["metadata"]["name"] for p in rolled if p["kind"] == "ValidatingAdmissionPolicy"] == guarded


def test_the_guards_built_in_containers_are_the_built_in_catalogue_entries():
    """policyGuard.entries must say what webhook/catalog/builtin/*.yaml inject, container for container: a
    built-in whose image changes without this value would have the guard deny every injected Pod."""
    builtin = ROOT / "webhook" / "catalog" / "builtin"
    entries = {}
    for path in sorted(builtin.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            entries[document["metadata"]["name"]] = [{"name": c["name"], "image": c["image"]}
                                                     for c in document["spec"]["containers"]]
    assert sorted(entries) == ["db-ambassador", "json-log-adapter", "log-shipper"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["policyGuard"]["entries"] == entries
    for name, containers in entries.items():  # literal images: the guard compares them exactly
        assert all("${" not in c["image"] and ":" in c["image"] for c in containers), name


# --- RBAC: what the chart README says is what each certificates mode renders

MODES = {"selfManaged": SCENARIOS["default"], "certManager": SCENARIOS["cert-manager"],
         "existingSecret": SCENARIOS["existing-secret"]}


def _readme_rbac() -> dict[str, set[tuple[str, str, str, str, tuple[str, ...]]]]:
    """The chart README's RBAC table: mode -> {(kind, apiGroup, resource, resourceName, verbs)}."""
    section = (CHART / "README.md").read_text().split("## RBAC", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set] = {mode: set() for mode in MODES}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("modes", "") or set(cells[0]) <= {"-"}:
            continue
        modes, kind, group, resource, name, verbs = cells
        group = "" if group == "core" else group
        name = "" if name == "any" else name.replace("<fullname>", FULLNAME)
        for mode in (MODES if modes == "all" else [m.strip().strip("`") for m in modes.split(",")]):
            rows[mode].add((kind, group, resource, name, tuple(v.strip() for v in verbs.split(","))))
    return rows


def test_the_chart_readme_says_which_rbac_each_certificates_mode_renders():
    documented = _readme_rbac()
    assert documented["selfManaged"] and documented["certManager"]
    for mode, settings in MODES.items():
        docs = render(settings)
        rendered = set()
        for role in [d for d in docs if d["kind"] in ("ClusterRole", "Role")]:
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for name in rule.get("resourceNames") or [""]:
                            rendered.add((role["kind"], group, resource, name, tuple(rule["verbs"])))
        assert rendered == documented[mode], mode
        # Each role is bound, by a binding of its own kind, to the chart's ServiceAccount.
        roles = {d["kind"] for d in docs if d["kind"] in ("ClusterRole", "Role")}
        bindings = {d["kind"] for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")}
        assert bindings == {f"{kind}Binding" for kind in roles}, mode
        assert roles == {row[0] for row in documented[mode]}, mode
