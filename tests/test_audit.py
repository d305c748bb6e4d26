"""`podpatterns audit` against the stand-in API: the Pods of tests/auditcluster.py checked as admission would
decide them now, run as a user runs the command."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests import auditcluster as cluster
from tests.auditcluster import run
from tests.helpers import free_port, podpatterns_command
from webhook.cli import commands as cli
from webhook.core import audit, engine

POLICY = ["--policy", str(cluster.POLICY_FILE)]


@pytest.fixture()
def api():
    with cluster.populated() as running:
        yield running


def test_every_finding_is_a_row_naming_pod_rule_enforcement_and_what_admission_would_do(api, tmp_path, capsys):
    code, out, err = run(api, tmp_path, capsys, "-A", *POLICY)
    assert code == 1  # Pods break enforced rules: admission would inject into them or deny them
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "POD", "RULE", "KIND", "ENFORCEMENT", "ADMISSION", "MESSAGE"]
    rows = {tuple(line.split()[:6]) for line in lines[1:]}
    assert rows == {(ns, pod, rule or "-", kind, enforcement, admission)
                    for ns, pod, rule, kind, enforcement, admission in cluster.FINDINGS}
    forged = next(line for line in lines if " web-forged " in line and "prod-logs" in line)
    assert forged.endswith("the Pod lacks log-shipper (mandatory by rule prod-logs); the Pod has no container log-shipper")
    assert err == ("17 Pod(s) checked in any namespace: 15 finding(s) on 12 Pod(s), 11 that admission would not have "
                   "let be (inject, default or deny); skipped 3 (1 excluded-namespace, 1 mirror, 1 terminated).\n")


def test_json_and_yaml_say_the_same_for_scripts(api, tmp_path, capsys):
    code, out, _ = run(api, tmp_path, capsys, "-A", "-o", "json", *POLICY)
    assert code == 1
    data = json.loads(out)
    assert cluster.found(data) == cluster.FINDINGS
    assert data["checked"] == cluster.CHECKED and data["skipped"] == cluster.SKIPPED
    assert data["namespaces"] == 8 and data["podsWithFindings"] == 12 and data["errors"] == []
    failopen = next(f for f in data["findings"] if f["pod"] == "web-failopen")
    assert failopen == {"namespace": "prod", "pod": "web-failopen",
                        "uid": api.get(cluster.pod_path("prod", "web-failopen"))["metadata"]["uid"],
                        "rule": "prod-logs", "kind": "missing-entry",
                        "message": "the Pod lacks log-shipper (mandatory by rule prod-logs)", "enforcement": "enforce",
                        "admission": "inject", "mandatory": True, "entries": ["log-shipper"]}
    code, out, _ = run(api, tmp_path, capsys, "-A", "-o", "yaml", *POLICY)
    assert code == 1 and yaml.safe_load(out) == data


def test_the_audit_decides_each_stored_pod_as_admission_does(api):
    """Cross-check against the engine itself: what the audit says admission would do is what admission does."""
    for path, pod in sorted(api.objects.items()):
        if "/pods/" not in path or pod["metadata"]["namespace"] == "kube-system":
            continue
        namespace = cluster.NAMESPACES.lookup(pod["metadata"]["namespace"])
        findings = audit.audit(pod, cluster.CONFIGURATION, namespace)
        plan = engine.plan(pod, cluster.CATALOGUE, engine.Settings(), namespace.name, "", namespace,
                           cluster.CONFIGURATION.policy)
        denies = any(f.admission == "deny" for f in findings)
        assert denies == (plan.denial is not None), path
        if not denies:
            injected = {e for f in findings if f.admission == "inject" for e in f.entries}
            assert injected == {d.entry for d in plan.decisions if d.injected and "rule" in d.source}, path


@pytest.mark.parametrize(("namespace", "code"), [("dev", 0), ("staging", 0), ("canary", 0), ("prod", 1), ("test", 1)])
def test_exit_code_is_1_only_when_a_pod_breaks_an_enforced_rule(api, tmp_path, capsys, namespace, code):
    """warn and report findings are shown, and exit 0: admission admits those Pods as they are."""
    done, out, err = run(api, tmp_path, capsys, "-n", namespace, *POLICY)
    assert done == code, err
    expected = {(pod, rule or "-") for ns, pod, rule, *_ in cluster.FINDINGS if ns == namespace}
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["POD", "RULE"]  # one namespace: no NAMESPACE column
    assert {tuple(line.split()[:2]) for line in lines[1:]} == expected
    assert f" Pod(s) checked in namespace {namespace}: {len(expected)} finding(s) on " in err


def test_a_namespace_without_findings_prints_nothing_on_stdout_and_exits_0(api, tmp_path, capsys):
    api.delete(cluster.pod_path("sandbox", "tool-forbidden"))
    api.put(cluster.admitted(cluster.app_pod("tool", "sandbox", {"podpatterns.io/inject": "json-log-adapter"})),
            cluster.pod_path("sandbox", "tool"))
    code, out, err = run(api, tmp_path, capsys, "-n", "sandbox", *POLICY)
    assert (code, out) == (0, "")
    assert err == "1 Pod(s) checked in namespace sandbox: no findings.\n"


def test_fixed_pods_leave_the_audit(api, tmp_path, capsys):
    """The fail-open Pod's workload restarted (podpatterns rollout): its new Pod went through admission."""
    api.delete(cluster.pod_path("prod", "web-failopen"))
    cluster.store(api, cluster.admitted(cluster.app_pod("web-failopen-2", "prod")))
    code, out, _ = run(api, tmp_path, capsys, "-n", "prod", "-o", "json", *POLICY)
    assert code == 1  # the forged one is still there
    assert {f["pod"] for f in json.loads(out)["findings"]} == {"web-forged"}


def test_namespaces_the_webhook_never_sees_are_skipped(api, tmp_path, capsys):
    code, out, _ = run(api, tmp_path, capsys, "-A", "-o", "json", "--skip-namespace", "tools", *POLICY)
    assert code == 1
    data = json.loads(out)
    assert "web-tools" not in {f["pod"] for f in data["findings"]}
    assert data["skipped"] == {**cluster.SKIPPED, "excluded-namespace": 2}
    # With --release, the release's own namespace is skipped, and its ConfigMaps give the policy.
    api.put({"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"labels": {"app.kubernetes.io/instance": "pp"}},
             "data": {"policy.yaml": cluster.POLICY_FILE.read_text()}}, "/api/v1/namespaces/tools/configmaps/pp-podpatterns-policy")
    code, out, _ = run(api, tmp_path, capsys, "-A", "-o", "json", "--release", "pp", "--release-namespace", "tools")
    assert code == 1
    data = json.loads(out)
    assert cluster.found(data) == {f for f in cluster.FINDINGS if f[0] != "tools"}
    assert data["skipped"]["excluded-namespace"] == 2


def test_without_a_policy_only_pods_admission_would_refuse_are_found(api, tmp_path, capsys):
    code, out, _ = run(api, tmp_path, capsys, "-A", "-o", "json")
    assert code == 1
    assert cluster.found(json.loads(out)) == {("default", "db-client", "", "invalid", "enforce", "deny")}


def test_a_pod_the_engine_trips_on_is_an_error_row_and_the_others_are_still_audited(api, tmp_path, capsys, monkeypatch):
    real = audit.audit

    def tripping(pod, configuration, namespace):
        if pod["metadata"]["name"] == "svc-staging":
            raise KeyError("containers")
        return real(pod, configuration, namespace)

    monkeypatch.setattr(audit, "audit", tripping)
    code, out, _ = run(api, tmp_path, capsys, "-n", "staging", *POLICY)
    assert code == 1
    assert out.splitlines()[1].split()[:5] == ["svc-staging", "-", "error", "-", "deny"]
    assert "podpatterns could not audit the Pod: KeyError: 'containers'" in out


def test_forbidden_says_so_in_one_line_and_exits_2(api, tmp_path, capsys):
    api.fault("GET", "/api/v1/pods", status=403, reason="Forbidden",
              message='pods is forbidden: User "dev" cannot list resource "pods" in API group "" at the cluster scope')
    code, out, err = run(api, tmp_path, capsys, "-A", *POLICY)
    assert (code, out) == (2, "")
    assert err == ('podpatterns audit: forbidden: pods is forbidden: User "dev" cannot list resource "pods" in API group '
                   '"" at the cluster scope (the user lacks RBAC permission; see README, Day two, for the rules needed)\n')


def test_an_unreachable_api_says_so_and_exits_2(tmp_path, capsys):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "gone", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}]}))
    code = cli.main(["audit", "-A", "--kubeconfig", str(kubeconfig), *POLICY])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("podpatterns audit: cannot reach the Kubernetes API: ")
    assert err.rstrip().endswith("(is the cluster up, and the kubeconfig's server right?)")


def test_the_installed_command(api, tmp_path):
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    done = subprocess.run([*podpatterns_command(), "audit", "-A", "-o", "json", "--kubeconfig", str(kubeconfig), *POLICY],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert cluster.found(json.loads(done.stdout)) == cluster.FINDINGS
    assert done.stderr == ""
