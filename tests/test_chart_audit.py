"""The chart's background audit (`audit.*`): what it renders, what it refuses, the RBAC the README states, and the
rendered Deployment run for real against the stand-in API: PolicyReports written, rewritten and removed, with
nothing asked of the API beyond the rendered RBAC, and every verb granted used."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
import yaml

from tests import auditcluster as cluster
from tests.kubeapi import KubeApi
from tests.test_chart import CHART, FULLNAME, NAMESPACE, SCENARIOS, find, helm, render
from tests.test_chart_server import Deployment, assert_within_rbac, seed

AUDIT = SCENARIOS["audit"]
EXCLUDED = [NAMESPACE, "kube-system", "kube-public", "kube-node-lease", "monitoring"]


def args(docs: list[dict[str, Any]]) -> list[str]:
    return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_audit_is_off_by_default_and_adds_nothing():
    docs = render([])
    assert not [a for a in args(docs) if a.startswith("--audit")]
    assert "CustomResourceDefinition" not in {d["kind"] for d in docs}
    assert all(r["resources"] != ["pods"] for r in find(docs, "ClusterRole")["rules"])


def test_the_audit_values_become_serve_flags_skipping_what_the_webhook_never_sees():
    docs = render(AUDIT)
    flags = [a for a in args(docs) if a.startswith("--audit")]
    assert flags == ["--audit-interval=300", *[f"--audit-skip-namespace={ns}" for ns in EXCLUDED], "--audit-write-reports"]
    only_metrics = render(["audit.interval=60"])
    assert [a for a in args(only_metrics) if a.startswith("--audit")][-1] == "--audit-skip-namespace=kube-node-lease"
    rules = find(only_metrics, "ClusterRole")["rules"]
    assert rules[-1] == {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    assert not [r for r in rules if "wgpolicyk8s.io" in r["apiGroups"]]


def test_the_crd_is_installed_only_when_asked_and_kept_on_uninstall():
    crd = find(render(AUDIT), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "policyreports.wgpolicyk8s.io"
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["kind"] == "PolicyReport"
    assert [v["name"] for v in crd["spec"]["versions"]] == ["v1alpha2"]
    docs = render(["audit.interval=60", "audit.writeReports=true"])  # the cluster has Kyverno's
    assert "CustomResourceDefinition" not in {d["kind"] for d in docs}


@pytest.mark.parametrize(("settings", "error"), [
    (["audit.writeReports=true"], "audit.writeReports writes what the background audit finds: set audit.interval"),
    (["audit.interval=-5"], "at '/audit/interval': minimum: got -5, want 0"),
    (["audit.interval=5m"], "at '/audit/interval': got string, want integer"),
    (["audit.reports=true"], "at '/audit': additional properties 'reports' not allowed"),
])
def test_bad_audit_values_are_refused_at_render(settings, error):
    done = helm("template", "pp", str(CHART), "-n", NAMESPACE, "--skip-tests",
                *[flag for s in settings for flag in ("--set", s)])
    assert done.returncode != 0 and error in done.stderr, done.stderr


def test_the_readme_states_the_rbac_the_audit_adds():
    section = (CHART / "README.md").read_text().split("## Background audit and PolicyReports", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("when", "") and not set(cells[0]) <= {"-"}:
            _, group, resource, name, verbs = cells
            documented.add(("" if group == "core" else group, resource, "" if name == "any" else name,
                            tuple(v.strip() for v in verbs.split(","))))
    default = find(render([]), "ClusterRole")["rules"]
    added = [r for r in find(render(AUDIT), "ClusterRole")["rules"] if r not in default]
    rendered = {(g, res, n, tuple(r["verbs"])) for r in added for g in r["apiGroups"] for res in r["resources"]
                for n in r.get("resourceNames") or [""]}
    assert rendered == documented and len(documented) == 3


@pytest.mark.slow
def test_the_installed_chart_audits_and_keeps_its_policyreports_within_its_rbac(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": yaml.safe_load(cluster.POLICY_FILE.read_text())["spec"],
                                      "audit": {"interval": 1, "writeReports": True, "installPolicyReportCRD": True}}))
    docs = render(["-f", str(values)])
    with KubeApi() as api:
        seed(api, docs)
        cluster.populate(api)
        (tmp_path / "run").mkdir()
        deployment = Deployment(docs, tmp_path / "run", api)
        try:
            # A pass writes the namespaces' reports one after the other: wait for the last of them.
            wait_for(lambda: api.get(cluster.report_path("prod")) and api.get(cluster.report_path("tools")), deployment)
            prod = api.get(cluster.report_path("prod"))
            assert prod["summary"] == {"pass": 4, "fail": 4, "warn": 0, "error": 0, "skip": 0}
            # Pods change: a forged one deleted (prod rewritten, after a conflict with another writer), the tools
            # namespace emptied (its report removed).
            api.fault("PUT", cluster.report_path("prod"), status=409, reason="Conflict", message="modified meanwhile")
            api.delete(cluster.pod_path("prod", "web-forged"))
            api.delete(cluster.pod_path("tools", "web-tools"))
            wait_for(lambda: api.get(cluster.report_path("tools")) is None and
                     api.get(cluster.report_path("prod"))["summary"]["fail"] == 2, deployment)
            secret = api.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}-tls")
            client = deployment.wait_ready(base64.b64decode(secret["data"]["ca.crt"]))
            text = client.get("/metrics").text
            client.close()
            assert 'podpatterns_audit_findings{enforcement="enforce",kind="missing-entry",rule="prod-logs"} 1.0' in text
        finally:
            deployment.stop()
        used = assert_within_rbac(api, docs)
    group = "wgpolicyk8s.io"
    assert {("list", "", "pods"), ("list", group, "policyreports"), ("create", group, "policyreports"),
            ("get", group, "policyreports"), ("update", group, "policyreports"), ("delete", group, "policyreports")} <= used
    assert ("watch", "", "pods") not in used and ("get", "", "pods") not in used


def wait_for(condition, deployment: Deployment, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert deployment.process.poll() is None, deployment.log.read_text()
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s:\n{deployment.log.read_text()}")
