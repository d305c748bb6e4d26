"""`podpatterns audit --write-reports`: PolicyReports (wgpolicyk8s.io/v1alpha2) in the stand-in API, one per
namespace, each valid against the chart's own CRD, updated as the Pods change; and the clear failures."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tests import auditcluster as cluster
from tests.auditcluster import run
from tests.test_chart import find, render
from webhook.core import policyreport
from webhook.core.findings import Finding
from webhook.core.podaudits import PodAudit

POLICY = ["--policy", str(cluster.POLICY_FILE)]
REPORTS = "/apis/wgpolicyk8s.io/v1alpha2"
WITH_RESULTS = ["canary", "default", "dev", "prod", "sandbox", "staging", "test", "tools"]


@pytest.fixture(scope="module")
def crd_schema() -> dict[str, Any]:
    crd = find(render(["audit.installPolicyReportCRD=true"]), "CustomResourceDefinition")
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def assert_valid(report: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(schema).validate(report)
    # Only the severities every PolicyReport CRD in use accepts (Kyverno's older ones know high, medium, low).
    assert {r.get("severity") for r in report["results"]} <= {None, "high", "medium", "low"}


@pytest.fixture()
def api():
    with cluster.populated() as running:
        yield running


def results(report: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(Pod, rule, result, severity) of each result."""
    return {(r["resources"][0]["name"], r.get("rule", ""), r["result"], r.get("severity", "")) for r in report["results"]}


def test_one_report_per_namespace_with_a_result_per_pod_and_rule(api, tmp_path, capsys, crd_schema):
    code, out, err = run(api, tmp_path, capsys, "-A", "--write-reports", *POLICY)
    assert code == 1 and out  # the findings are printed as without --write-reports
    assert err.endswith(f"PolicyReports podpatterns-audit: {len(WITH_RESULTS)} created\n")
    written = sorted(p.split("/")[5] for p in api.objects if "/policyreports/" in p)
    assert written == WITH_RESULTS  # not kube-system (skipped), not a namespace whose Pods no rule selects
    for namespace in written:
        report = api.get(cluster.report_path(namespace))
        assert_valid(report, crd_schema)
        assert report["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "podpatterns"
        assert {r["source"] for r in report["results"]} == {"podpatterns"} == {r["policy"] for r in report["results"]}
        counted = {name: sum(r["result"] == name for r in report["results"]) for name in policyreport.RESULTS}
        assert report["summary"] == counted
    prod = api.get(cluster.report_path("prod"))
    assert results(prod) == {("web-failopen", "prod-logs", "fail", "high"), ("web-failopen", "prod-limits", "fail", "medium"),
                             ("web-forged", "prod-logs", "fail", "high"), ("web-forged", "prod-limits", "fail", "medium"),
                             ("web-injected", "prod-logs", "pass", ""), ("web-injected", "prod-limits", "pass", ""),
                             ("worker-injected", "prod-logs", "pass", ""), ("worker-injected", "prod-limits", "pass", "")}
    assert prod["summary"] == {"pass": 4, "fail": 4, "warn": 0, "error": 0, "skip": 0}
    failopen = next(r for r in prod["results"] if r["resources"][0]["name"] == "web-failopen" and r["result"] == "fail")
    pod = api.get(cluster.pod_path("prod", "web-failopen"))
    assert failopen["resources"] == [{"apiVersion": "v1", "kind": "Pod", "name": "web-failopen", "namespace": "prod",
                                      "uid": pod["metadata"]["uid"]}]
    assert failopen["category"] == "missing-entry" and failopen["scored"] is True
    assert failopen["message"] == "the Pod lacks log-shipper (mandatory by rule prod-logs)"
    assert failopen["properties"] == {"kind": "missing-entry", "enforcement": "enforce", "admission": "inject",
                                      "mandatory": "true", "entries": "log-shipper"}
    assert set(failopen["timestamp"]) == {"seconds", "nanos"}
    # A denial stops admission: the rules it does not come to are skipped, not passed.
    assert results(api.get(cluster.report_path("test"))) == {
        ("api-nolimits", "test-limits", "fail", "high"), ("api-nolimits", "small-pods", "skip", ""),
        ("api-big", "small-pods", "fail", "high"), ("api-big", "test-limits", "skip", ""),
        ("api-ok", "test-limits", "pass", ""), ("api-ok", "small-pods", "pass", "")}
    # warn and audit enforcement, and missingLimits: warn, are warnings (not scored); a mandatory entry is high.
    canary = api.get(cluster.report_path("canary"))
    assert results(canary) == {
        ("svc-canary", "canary-logs", "warn", "high"), ("svc-canary", "canary-entries", "pass", ""),
        ("svc-canary", "canary-cap", "pass", ""), ("svc-canary-ok", "canary-logs", "pass", ""),
        ("svc-canary-ok", "canary-entries", "pass", ""), ("svc-canary-ok", "canary-cap", "warn", "low")}
    assert all(r["scored"] is False for r in canary["results"] if r["result"] == "warn")
    assert results(api.get(cluster.report_path("dev"))) == {("app-dev", "dev-limits", "warn", "low"),
                                                           ("app-dev-ok", "dev-limits", "pass", "")}
    # A Pod admission refuses for a reason of its own has no rule; one lacking an optional entry is medium.
    assert results(api.get(cluster.report_path("default"))) == {("db-client", "", "fail", "high"),
                                                               ("logs-json-failopen", "json-logs-on-request", "fail", "medium")}


def test_a_second_run_rewrites_only_what_changed_and_removes_reports_without_results(api, tmp_path, capsys, crd_schema):
    run(api, tmp_path, capsys, "-A", "--write-reports", *POLICY)
    first = api.get(cluster.report_path("prod"))
    api.requests.clear()
    code, _, err = run(api, tmp_path, capsys, "-A", "--write-reports", *POLICY)
    assert code == 1
    assert err.endswith(f"PolicyReports podpatterns-audit: {len(WITH_RESULTS)} unchanged\n")
    assert api.requested("PUT") == [] and api.requested("POST") == []  # two replicas write each change once
    # The fail-open Pod's workload is restarted through admission; the tools namespace is emptied.
    api.delete(cluster.pod_path("prod", "web-failopen"))
    cluster.store(api, cluster.admitted(cluster.app_pod("web-failopen-2", "prod")))
    api.delete(cluster.pod_path("tools", "web-tools"))
    code, out, err = run(api, tmp_path, capsys, "-A", "--write-reports", "-o", "json", *POLICY)
    assert code == 1
    assert json.loads(out)["reports"] == {"created": [], "updated": ["prod"], "deleted": ["tools"],
                                          "unchanged": [n for n in WITH_RESULTS if n not in ("prod", "tools")]}
    prod = api.get(cluster.report_path("prod"))
    assert_valid(prod, crd_schema)
    assert prod["summary"] == {"pass": 6, "fail": 2, "warn": 0, "error": 0, "skip": 0}
    assert int(prod["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert prod["metadata"]["uid"] == first["metadata"]["uid"]  # replaced, not re-created
    # A result found before keeps the time it was first found.
    def stamps(report):
        return {(r["resources"][0]["uid"], r.get("rule"), r["result"]): r["timestamp"] for r in report["results"]}
    before, after = stamps(first), stamps(prod)
    assert all(after[key] == before[key] for key in set(before) & set(after)) and set(before) & set(after)
    assert api.get(cluster.report_path("tools")) is None


def test_one_namespace_writes_its_own_report_and_leaves_the_others(api, tmp_path, capsys):
    other = {"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
             "metadata": {"labels": {"app.kubernetes.io/managed-by": "podpatterns"}},
             "summary": {"pass": 1}, "results": []}
    api.put(other, cluster.report_path("dev"))
    kyverno = {**other, "metadata": {"labels": {"app.kubernetes.io/managed-by": "kyverno"}}}
    api.put(kyverno, f"{REPORTS}/namespaces/prod/policyreports/kyverno-pod-check")
    code, _, err = run(api, tmp_path, capsys, "-n", "prod", "--write-reports", *POLICY)
    assert code == 1
    assert err.endswith("PolicyReports podpatterns-audit: 1 created\n")
    assert api.get(cluster.report_path("dev"))["summary"] == {"pass": 1}  # another namespace: not looked at
    assert api.get(f"{REPORTS}/namespaces/prod/policyreports/kyverno-pod-check") is not None  # not ours
    assert [r.path for r in api.requested("GET") if "policyreports" in r.path] == [f"{REPORTS}/namespaces/prod/policyreports"]


def test_a_report_written_meanwhile_by_another_replica_is_read_again_and_replaced(api, tmp_path, capsys):
    run(api, tmp_path, capsys, "-A", "--write-reports", *POLICY)
    api.delete(cluster.pod_path("prod", "web-forged"))
    api.fault("PUT", f"{REPORTS}/namespaces/prod/policyreports/", status=409, reason="Conflict",
              message='Operation cannot be fulfilled on policyreports.wgpolicyk8s.io "podpatterns-audit": the object '
                      'has been modified; please apply your changes to the latest version and try again')
    api.requests.clear()
    code, _, err = run(api, tmp_path, capsys, "-A", "--write-reports", *POLICY)
    assert code == 1
    assert "1 updated" in err
    assert [(r.method, r.status) for r in api.requests if r.path == cluster.report_path("prod")] == [
        ("PUT", 409), ("GET", 200), ("PUT", 200)]
    assert "web-forged" not in {r["resources"][0]["name"] for r in api.get(cluster.report_path("prod"))["results"]}


def test_without_the_policyreport_crd_it_says_what_to_install_and_exits_2(api, tmp_path, capsys):
    # What a real apiserver answers for a group/resource it does not serve: 404, a Status without details.
    api.fault("GET", f"{REPORTS}/policyreports", status=404, reason="NotFound",
              message="the server could not find the requested resource")
    code, out, err = run(api, tmp_path, capsys, "-A", "--write-reports", *POLICY)
    assert (code, out) == (2, "")
    assert err == ("podpatterns audit: this cluster has no PolicyReport resource (policyreports.wgpolicyk8s.io/v1alpha2): "
                   "the API answered 404 the server could not find the requested resource. Install the CRD — the chart "
                   "does with --set audit.installPolicyReportCRD=true; Kyverno and Policy Reporter install it too — or "
                   "leave out writing reports\n")
    assert api.requested("GET", "/api/v1/pods") == []  # said before auditing


def test_forbidden_to_write_reports_says_so_and_exits_2(api, tmp_path, capsys):
    api.fault("POST", f"{REPORTS}/namespaces/", status=403, reason="Forbidden",
              message='policyreports.wgpolicyk8s.io is forbidden: User "dev" cannot create resource "policyreports" in '
                      'API group "wgpolicyk8s.io" in the namespace "canary"')
    code, out, err = run(api, tmp_path, capsys, "-A", "--write-reports", *POLICY)
    assert (code, out) == (2, "")
    assert err.startswith('podpatterns audit: forbidden: policyreports.wgpolicyk8s.io is forbidden: User "dev" cannot '
                          'create resource "policyreports"')


# --- The report itself (webhook/core/policyreport.py)

def pod_audit(name: str, findings: tuple[Finding, ...] = (), rules: tuple[str, ...] = ("r",)) -> PodAudit:
    return PodAudit("shop", name, f"uid-{name}", rules, findings)


def test_a_report_too_big_for_etcd_keeps_failures_first_and_says_what_it_left_out(crd_schema):
    lacks = Finding("r", "missing-entry", "the Pod lacks log-shipper (mandatory by rule r)", "enforce", "inject", True,
                    ("log-shipper",))
    pods = [pod_audit(f"web-{i:05d}", (lacks,) if i % 10 == 0 else ()) for i in range(5000)]
    report = policyreport.build("shop", pods, 1_700_000_000.25, None)
    assert_valid(report, crd_schema)
    assert report["summary"] == {"pass": 4500, "fail": 500, "warn": 0, "error": 0, "skip": 0}
    assert len(json.dumps(report)) < 1_200_000
    kept = report["results"]
    assert sum(r["result"] == "fail" for r in kept) == 500 and 500 < len(kept) < 5000
    assert report["metadata"]["annotations"] == {policyreport.OMITTED: f"{5000 - len(kept)} of 5000 results left out to "
                                                 "keep the report under 1 MB; podpatterns audit -n shop lists every finding"}
    assert kept[0]["timestamp"] == {"seconds": 1_700_000_000, "nanos": 250_000_000}


def test_a_namespace_whose_pods_no_rule_selects_has_no_report():
    assert policyreport.build("shop", [pod_audit("web", rules=())], 0.0, None) is None


def test_a_pod_podpatterns_could_not_audit_is_an_error_result(crd_schema):
    broken = PodAudit("shop", "web", "uid-web", ("r",), error="podpatterns could not audit the Pod: KeyError: 'x'")
    report = policyreport.build("shop", [broken], 0.0, None)
    assert_valid(report, crd_schema)
    assert report["summary"] == {"pass": 0, "fail": 0, "warn": 0, "error": 1, "skip": 0}
    assert [(r.get("rule"), r["result"], r["severity"], r["message"]) for r in report["results"]] == [
        (None, "error", "high", "podpatterns could not audit the Pod: KeyError: 'x'")]
