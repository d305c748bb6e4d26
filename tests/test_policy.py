"""Cluster-wide policy through the HTTP endpoint: precedence, namespace defaults, rules — table-driven.

The server runs with tests/policy/policy.yaml and the Namespaces of tests/policy/namespaces.yaml; each
case sends a real AdmissionReview body (the recorded `pod-create-annotated`, moved to a namespace), applies
the patch with jsonpatch and validates the resulting Pod.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import yaml

from tests.helpers import (
    Server,
    apply,
    assert_valid_pod,
    ops_of,
    podpatterns_command,
    review,
)
from webhook.catalog import catalogue, policy
from webhook.cli import commands as cli
from webhook.core import audit, engine
from webhook.core.configuration import Configuration
from webhook.core.namespaces import namespaces_in

HERE = Path(__file__).resolve().parent / "policy"
UNKNOWN_IN_TEST = "namespace test annotation podpatterns.io/inject names unknown entry 'no-such-entry'; ignored"
CATALOGUE = catalogue.load()
CONFIGURATION = Configuration(CATALOGUE, engine.Settings(), policy.load(HERE / "policy.yaml", CATALOGUE))
NAMESPACES = namespaces_in(list(yaml.safe_load_all((HERE / "namespaces.yaml").read_text())))
LIMITS = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


@dataclass
class Case:
    namespace: str
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    app_limits: bool = False
    injected: list[str] = field(default_factory=list)  # in the order of the status annotation
    denied: str | None = None
    warnings: list[str] = field(default_factory=list)
    upstream: str | None = None  # what the injected db-ambassador connects to
    app_resources: dict | None = None


CASES = {
    "mandatory rule adds an entry without any annotation": Case(
        "prod", injected=["log-shipper"],
        app_resources={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}),
    "environment gives the ambassador its upstream": Case(
        "prod", {"podpatterns.io/inject": "db-ambassador"}, injected=["db-ambassador", "log-shipper"],
        upstream="pg.prod-db.svc:5432"),
    "the Pod's own parameter wins over the environment": Case(
        "dev", {"podpatterns.io/inject": "db-ambassador", "db-ambassador.podpatterns.io/upstream": "pg.mine.svc:5432"},
        app_limits=True, injected=["db-ambassador", "json-log-adapter"], upstream="pg.mine.svc:5432"),
    "dev gets the dev database": Case(
        "dev", {"podpatterns.io/inject": "db-ambassador"}, app_limits=True, injected=["db-ambassador", "json-log-adapter"],
        upstream="pg.dev-db.svc:5432"),
    "no environment and no upstream is denied": Case(
        "default", {"podpatterns.io/inject": "db-ambassador"},
        denied="db-ambassador: required parameter upstream is missing"),
    "excluding a mandatory entry is denied naming the rule": Case(
        "prod", {"podpatterns.io/exclude": "log-shipper"},
        denied="excludes log-shipper, which is mandatory by rule prod-logs"),
    "exclude all cannot drop a mandatory entry either": Case(
        "prod", {"podpatterns.io/exclude": "all"}, denied="mandatory by rule prod-logs"),
    "namespace annotation adds a default entry": Case(
        "dev", app_limits=True, injected=["json-log-adapter"]),
    "a Pod opts out of the namespace default": Case(
        "dev", {"podpatterns.io/exclude": "json-log-adapter"}, app_limits=True, injected=[]),
    "the Pod's annotation comes first, then the namespace's": Case(
        "dev", {"podpatterns.io/inject": "log-shipper"}, app_limits=True, injected=["log-shipper", "json-log-adapter"]),
    "warn rule: missing limits give an admission warning": Case(
        "dev", injected=["json-log-adapter"],
        warnings=["rule dev-limits: every container needs cpu and memory limits; missing: web cpu, web memory"]),
    "deny rule: missing limits are denied": Case(
        "test", warnings=[UNKNOWN_IN_TEST], denied="rule test-limits: every container needs cpu and memory limits; missing: web cpu, web memory"),
    "an unknown entry in a namespace annotation warns and is skipped": Case(
        "test", app_limits=True, injected=["log-shipper"], warnings=[UNKNOWN_IN_TEST]),
    "container cap counts the app's and the injected containers": Case(
        "test", {"podpatterns.io/inject": "json-log-adapter"}, app_limits=True, warnings=[UNKNOWN_IN_TEST],
        denied="the Pod would have 3 containers (1 of its own, 2 injected (json-log-adapter, log-shipper)); "
               "rule small-pods allows at most 2"),
    "a rule selecting Pod labels adds an entry in any namespace": Case(
        "default", labels={"logs": "json"}, injected=["json-log-adapter"]),
    "an entry the namespace may not request is denied": Case(
        "sandbox", {"podpatterns.io/inject": "log-shipper"},
        denied="log-shipper (requested by annotation podpatterns.io/inject) is not allowed in namespace sandbox by "
               "rule sandbox-entries; allowed entries: json-log-adapter"),
    "an allowed entry passes the restriction": Case(
        "sandbox", {"podpatterns.io/inject": "json-log-adapter"}, injected=["json-log-adapter"]),
    "no annotation, no rule: nothing changes": Case("default", injected=[]),
    "a rule narrows what a Pod may ask of a resource parameter": Case(
        "dev", {"podpatterns.io/inject": "log-shipper", "log-shipper.podpatterns.io/memoryLimit": "512Mi"},
        app_limits=True, denied="annotation log-shipper.podpatterns.io/memoryLimit: value '512Mi' is not accepted: "
                                "rule dev-sizes allows at most 256Mi"),
    "within the rule's bounds the Pod's resources are used": Case(
        "dev", {"podpatterns.io/inject": "log-shipper", "log-shipper.podpatterns.io/memoryLimit": "256Mi"},
        app_limits=True, injected=["log-shipper", "json-log-adapter"]),
    "enforcement warn: a mandatory entry is not injected, a warning names it": Case(
        "staging", app_limits=True, injected=[],
        warnings=["the Pod lacks log-shipper (mandatory by rule staging-logs): not injected, the rule's enforcement is warn"]),
    "enforcement warn: what would be denied is admitted with a warning": Case(
        "staging", injected=[],
        warnings=["the Pod lacks log-shipper (mandatory by rule staging-logs): not injected, the rule's enforcement is warn",
                  "rule staging-limits: every container needs cpu and memory limits; missing: web cpu, web memory "
                  "(rule enforcement warn: admitted; enforce would deny)"]),
    "enforcement audit: nothing injected, nothing denied, nothing said": Case(
        "canary", {"podpatterns.io/inject": "log-shipper"}, injected=["log-shipper"]),
}
# What the audit finds in the Pod as sent (before admission), by case: (rule, kind, what admission does).
AUDITED = {
    "enforcement audit: nothing injected, nothing denied, nothing said": [
        ("canary-entries", "entry-not-allowed", "report"), ("canary-logs", "missing-entry", "report"),
        ("canary-cap", "too-many-containers", "report")],
    "enforcement warn: what would be denied is admitted with a warning": [
        ("staging-logs", "missing-entry", "warn"), ("staging-limits", "missing-limits", "warn")],
    "mandatory rule adds an entry without any annotation": [("prod-logs", "missing-entry", "inject"),
                                                             ("prod-limits", "missing-limits", "default")],
    "container cap counts the app's and the injected containers": [
        ("small-pods", "too-many-containers", "deny")],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("policy"), "--policy", str(HERE / "policy.yaml"),
                     "--namespaces-file", str(HERE / "namespaces.yaml"))
    yield running
    running.stop()


def body_for(case: Case) -> dict:
    body = review("pod-create-annotated")
    request = body["request"]
    request["namespace"] = case.namespace
    pod = request["object"]
    pod["metadata"]["namespace"] = case.namespace
    pod["metadata"]["annotations"] = dict(case.annotations)
    pod["metadata"]["labels"] = {"app": "web", **case.labels}
    if case.app_limits:
        pod["spec"]["containers"][0]["resources"] = LIMITS
    return body


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_policy_case(server, name):
    case = CASES[name]
    body = body_for(case)
    response = server.mutate(body).json()["response"]
    assert response.get("warnings", []) == case.warnings
    if case.denied:
        assert response["allowed"] is False and response["status"]["code"] == 400
        assert case.denied in response["status"]["message"]
        return
    assert response["allowed"] is True
    pod = body["request"]["object"]
    if case.injected or case.app_resources:
        pod = apply(pod, ops_of(response))
        assert_valid_pod(pod)
    else:
        assert "patch" not in response
    status = pod["metadata"].get("annotations", {}).get("podpatterns.io/status")
    assert [record["entry"] for record in json.loads(status or "[]")] == case.injected
    if case.upstream:
        ambassador = next(c for c in pod["spec"]["initContainers"] if c["name"] == "db-ambassador")
        assert any(case.upstream in arg for arg in ambassador.get("args", []) + ambassador.get("command", []))
    if case.app_resources:
        assert pod["spec"]["containers"][0]["resources"] == case.app_resources
    # Reinvocation (reinvocationPolicy: IfNeeded) sends the injected Pod again: nothing more to do.
    body["request"]["object"] = pod
    again = server.mutate(body).json()["response"]
    assert again["allowed"] is True and "patch" not in again
    # The audit of the stored Pod agrees: nothing to inject, nothing to deny, and what it finds admission warned of.
    stored = audit.audit(pod, CONFIGURATION, NAMESPACES.lookup(case.namespace))
    assert not [f for f in stored if f.admission in ("inject", "deny")]
    for finding in stored:
        assert finding.admission == "report" or any(finding.message in w for w in response.get("warnings", []))


@pytest.mark.parametrize("name", list(CASES))
def test_the_audit_of_the_pod_as_sent_decides_what_admission_decided(name):
    """As if the Pod had been created before the rules (or while the webhook failed open): the audit says what
    admission does to it, finding for finding."""
    case = CASES[name]
    pod = body_for(case)["request"]["object"]
    findings = audit.audit(pod, CONFIGURATION, NAMESPACES.lookup(case.namespace))
    plan = engine.plan(pod, CONFIGURATION.catalogue, CONFIGURATION.settings, case.namespace, "",
                       NAMESPACES.lookup(case.namespace), CONFIGURATION.policy)
    if case.denied:
        assert [f for f in findings if f.admission == "deny" and case.denied in f.message]
        assert findings[-1].admission == "deny"  # a denial ends the plan
    else:
        assert not [f for f in findings if f.admission == "deny"]
        injected = {entry for f in findings if f.admission == "inject" for entry in f.entries}
        assert injected == {d.entry for d in plan.decisions if d.injected and "rule" in d.source}
        assert injected <= set(case.injected)
        warned = [f.message for f in findings if f.admission == "warn"]
        assert all(any(message in w for w in case.warnings) for message in warned)
        assert len(warned) == len([w for w in case.warnings if w != UNKNOWN_IN_TEST])
    if name in AUDITED:
        assert sorted((f.rule, f.kind, f.admission) for f in findings) == sorted(AUDITED[name])


# --- The policy file: refused with file and line (podpatterns policy validate, as a platform team's CI runs it)

HEADER = "apiVersion: podpatterns.io/v1alpha1\nkind: Policy\nspec:\n"
BROKEN = {
    "unknown rule field": ("  rules:\n  - name: a\n    inject: [log-shipper]\n    mandatry: true\n",
                           4, "unknown field 'mandatry' in spec.rules[0]"),
    "unknown entry": ("  rules:\n  - name: a\n    inject: [log-shiper]\n", 3, "inject: no catalogue entry 'log-shiper'"),
    "mandatory without inject": ("  rules:\n  - name: a\n    maxContainers: 3\n    mandatory: true\n",
                                 4, "rule a: mandatory needs entries in inject"),
    "rule that does nothing": ("  rules:\n  - name: a\n    namespaceSelector: {}\n", 2, "rule a does nothing"),
    "duplicate rule name": ("  rules:\n  - name: a\n    maxContainers: 3\n  - name: a\n    maxContainers: 4\n",
                            4, "rule name 'a' is used twice"),
    "bad enforcement": ("  rules:\n  - name: a\n    maxContainers: 3\n    enforcement: dryrun\n", 4,
                        "rule a: enforcement must be one of enforce, warn, audit, got 'dryrun'"),
    "enforcement alone does nothing": ("  rules:\n  - name: a\n    enforcement: warn\n", 2, "rule a does nothing"),
    "bounds on a string parameter": ("  rules:\n  - name: a\n    parameterBounds:\n      log-shipper:\n"
                                     "        endpoint: {maximum: 3}\n", 5,
                                     "log-shipper has no integer or quantity parameter 'endpoint'"),
    "a bound that is no quantity": ("  rules:\n  - name: a\n    parameterBounds:\n      log-shipper:\n"
                                    "        memoryLimit: {maximum: lots}\n", 5,
                                    "log-shipper.memoryLimit.maximum: 'lots' is not a value the parameter accepts"),
    "bad cap": ("  rules:\n  - name: a\n    maxContainers: 0\n", 3, "maxContainers must be a whole number of at least 1"),
    "bad limits mode": ("  rules:\n  - name: a\n    resources: {missingLimits: sometimes}\n", 3,
                        "missingLimits must be one of default, warn, deny"),
    "default without limits": ("  rules:\n  - name: a\n    resources:\n      missingLimits: default\n      defaults:\n"
                               "        requests: {cpu: 10m}\n", 6, "needs defaults.limits for cpu and memory"),
    "bad quantity": ("  rules:\n  - name: a\n    resources:\n      missingLimits: default\n      defaults:\n"
                     "        limits: {cpu: lots, memory: 1Gi}\n", 6, "limits.cpu: 'lots' is not a Kubernetes quantity"),
    "bad selector operator": ("  rules:\n  - name: a\n    maxContainers: 3\n    namespaceSelector:\n      matchExpressions:\n"
                              "      - {key: env, operator: Equals, values: [x]}\n", 6, "one of In, NotIn, Exists"),
    "In without values": ("  rules:\n  - name: a\n    maxContainers: 3\n    podSelector:\n      matchExpressions:\n"
                          "      - {key: env, operator: In}\n", 6, "operator In needs values"),
    "environment parameter unknown": ("  environments:\n    parameters:\n      prod:\n        db-ambassador: {upstrem: x}\n",
                                      4, "db-ambassador has no parameter 'upstrem'"),
    "environment value refused": ("  environments:\n    parameters:\n      prod:\n        db-ambassador: {port: 99999}\n",
                                  4, "environment prod: db-ambassador.port"),
    "duplicate key": ("  rules:\n  - name: a\n    maxContainers: 3\n    maxContainers: 4\n", 4, "duplicate key 'maxContainers'"),
    "not YAML": ("  rules: [\n", 2, "invalid YAML"),
    # The same YAML guards as the catalogue (webhook/catalog/sourcemap.py): no alias bombs, tags or deep nesting.
    "alias bomb": ("  a: &a [x, x, x, x, x, x, x, x, x, x]\n  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", 5, "more than 20000 values once YAML aliases"),
    "alias in its own anchor": ("  rules: &r [*r]\n", 1, "alias *r refers to the collection it is in"),
    "deep nesting": ("  rules: " + "[" * 100 + "]" * 100 + "\n", 1, "nested deeper than 64 levels"),
    "binary tag": ("  rules:\n  - name: !!binary aGVsbG8=\n", 2, "a value of YAML type bytes is not allowed"),
    "python tag": ("  rules:\n  - name: !!python/object/apply:os.system [id]\n", 2, "invalid YAML"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_policy_is_refused_with_file_and_line(tmp_path, name):
    text, line, message = BROKEN[name]
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + text)
    done = run_cli("policy", "validate", str(path))
    assert done.returncode == 1
    line += HEADER.count("\n")
    assert f"{path}:{line}: " in done.stderr and message in done.stderr, done.stderr


def test_the_example_policy_validates_and_lists_what_each_rule_does():
    done = run_cli("policy", "validate", str(HERE / "policy.yaml"))
    assert done.returncode == 0, done.stderr
    assert "ok: rule prod-logs: inject log-shipper (mandatory)" in done.stdout
    assert "ok: environment prod (namespace label env): db-ambassador.upstream=pg.prod-db.svc:5432" in done.stdout


@pytest.mark.slow
def test_serve_refuses_to_start_with_a_broken_policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + BROKEN["unknown entry"][0])
    done = subprocess.run([*podpatterns_command(), "serve", "--policy", str(path), "--port", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "the policy is broken" in done.stderr and f"{path}:6:" in done.stderr


# --- explain: which rule added what, for each rule kind

def explain(manifest: str, *args: str) -> str:
    done = run_cli("explain", "-f", "-", "--policy", str(HERE / "policy.yaml"), *args,
                   stdin=(HERE / "namespaces.yaml").read_text() + "---\n" + manifest)
    assert done.returncode == 0, done.stderr
    return done.stdout


def pod_manifest(namespace: str, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                 limits: bool = False) -> str:
    container = {"name": "web", "image": "nginx:1.27", **({"resources": LIMITS} if limits else {})}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "web", "namespace": namespace, "annotations": annotations or {}, "labels": labels or {}},
        "spec": {"containers": [container]}})


def test_explain_names_the_rule_for_each_rule_kind():
    prod = explain(pod_manifest("prod", {"podpatterns.io/inject": "db-ambassador"}))
    assert "  db-ambassador: injected, requested by annotation podpatterns.io/inject" in prod
    assert "    upstream = pg.prod-db.svc:5432  (environment prod (namespace label env))" in prod
    assert "  log-shipper: injected, added by rule prod-logs (mandatory)" in prod
    assert "  rule prod-limits: default resources set on web" in prod

    dev = explain(pod_manifest("dev", {"podpatterns.io/exclude": "json-log-adapter"}))
    assert "  json-log-adapter: not injected, excluded by annotation podpatterns.io/exclude" in dev
    assert "  warning: rule dev-limits: every container needs cpu and memory limits; missing: web cpu, web memory" in dev

    labelled = explain(pod_manifest("default", labels={"logs": "json"}))
    assert "  json-log-adapter: injected, added by rule json-logs-on-request" in labelled

    namespace_default = explain(pod_manifest("dev", limits=True))
    assert "  json-log-adapter: injected, added by namespace dev (annotation podpatterns.io/inject)" in namespace_default

    denied = {
        "test": "denied: rule test-limits: every container needs cpu and memory limits",
        "sandbox": "denied: log-shipper (requested by annotation podpatterns.io/inject) is not allowed in namespace "
                   "sandbox by rule sandbox-entries",
    }
    for namespace, message in denied.items():
        assert message in explain(pod_manifest(namespace, {"podpatterns.io/inject": "log-shipper"}))
    capped = explain(pod_manifest("test", {"podpatterns.io/inject": "json-log-adapter"}, limits=True))
    assert "rule small-pods allows at most 2" in capped
    mandatory = explain(pod_manifest("prod", {"podpatterns.io/exclude": "all"}))
    assert "denied: annotation podpatterns.io/exclude: 'all' excludes log-shipper, which is mandatory by rule prod-logs" in mandatory


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`podpatterns ARGS` in-process (the same main() the console script calls), for speed."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch("sys.stdin", io.StringIO(stdin)), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_a_forged_status_does_not_hide_a_pod_from_a_rule_that_only_warns():
    """A rule rolled out with enforcement warn injects nothing, so a Pod could claim the entry to look compliant:
    the claim counts only when the Pod holds the entry's containers, as for an enforced rule."""
    case = Case("staging", app_limits=True)
    pod = body_for(case)["request"]["object"]
    digest = CATALOGUE["log-shipper"].digest
    pod["metadata"]["annotations"]["podpatterns.io/status"] = json.dumps(
        [{"entry": "log-shipper", "pattern": "sidecar", "digest": digest}])
    findings = audit.audit(pod, CONFIGURATION, NAMESPACES.lookup("staging"))
    assert [(f.rule, f.kind, f.admission) for f in findings] == [("staging-logs", "missing-entry", "warn")]
    # A Pod that really holds it (injected while the rule enforced, or on its own request) is not reported.
    holding = body_for(Case("staging", {"podpatterns.io/inject": "log-shipper"}, app_limits=True))["request"]["object"]
    plan = engine.plan(holding, CATALOGUE, CONFIGURATION.settings, "staging", "", NAMESPACES.lookup("staging"),
                       CONFIGURATION.policy)
    stored = apply(holding, plan.ops)
    stored["metadata"]["annotations"].pop("podpatterns.io/inject")
    assert audit.audit(stored, CONFIGURATION, NAMESPACES.lookup("staging")) == []
