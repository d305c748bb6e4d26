"""The background audit of `serve --audit-interval` (webhook/server/auditloop.py): one pass against the stand-in
API and the metrics it leaves; hot reloads; reports written once by two replicas; failures counted, never fatal."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from prometheus_client import REGISTRY

from tests import auditcluster as cluster
from tests.helpers import Server, podpatterns_command
from tests.kubeapi import KubeApi
from webhook.catalog import policy
from webhook.core.configuration import Configuration, ConfigurationHolder
from webhook.server import metrics
from webhook.server.auditloop import AuditLoop

FINDINGS = "podpatterns_audit_findings"


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def series() -> dict[tuple[str, str, str], float]:
    return {(s.labels["rule"], s.labels["kind"], s.labels["enforcement"]): s.value
            for family in REGISTRY.collect() if family.name == FINDINGS for s in family.samples}


@pytest.fixture()
def api():
    metrics.AUDIT_FINDINGS.clear()  # another test's loop may have left series in this process's registry
    with KubeApi() as running:
        cluster.populate(running)
        yield running


def loop(api: KubeApi, holder: ConfigurationHolder | None = None, **options) -> AuditLoop:
    return AuditLoop(api.client(), holder or ConfigurationHolder(cluster.CONFIGURATION), 60, clock=lambda: 1_750_000_000.0,
                     **{"skipped": ["tools"], **options})


def test_one_pass_sets_pods_breaking_each_rule_and_never_names_a_pod_or_namespace(api):
    successes = value("podpatterns_audit_runs_total", result="success")
    assert loop(api).run_once() is True
    assert series() == {
        ("prod-logs", "missing-entry", "enforce"): 2, ("json-logs-on-request", "missing-entry", "enforce"): 1,
        ("test-limits", "missing-limits", "enforce"): 1, ("small-pods", "too-many-containers", "enforce"): 1,
        ("sandbox-entries", "entry-not-allowed", "enforce"): 1, ("dev-limits", "missing-limits", "enforce"): 1,
        ("staging-logs", "missing-entry", "warn"): 1, ("canary-logs", "missing-entry", "audit"): 1,
        ("canary-cap", "too-many-containers", "audit"): 1, ("", "invalid", "enforce"): 1,
        ("prod-limits", "missing-limits", "enforce"): 2,
    }
    assert value("podpatterns_audit_pods") == cluster.CHECKED - 1  # tools is skipped
    assert value("podpatterns_audit_last_success_timestamp_seconds") == 1_750_000_000.0
    assert value("podpatterns_audit_runs_total", result="success") == successes + 1
    # Bounded labels: rules, kinds, enforcements; no Pod, no namespace.
    names = {p["metadata"]["name"] for path, p in api.objects.items()} | {"prod", "test", "dev", "default", "canary"}
    labels = {v for key in series() for v in key}
    assert labels <= {r.name for r in cluster.CONFIGURATION.policy.rules} | {"", "missing-entry", "missing-limits",
                                                                            "too-many-containers", "entry-not-allowed",
                                                                            "invalid", "enforce", "warn", "audit"}
    assert not labels & (names - {""})


def test_a_hot_reload_applies_to_the_next_pass_and_rules_without_findings_lose_their_series(api, tmp_path):
    holder = ConfigurationHolder(cluster.CONFIGURATION)
    audit = loop(api, holder)
    assert audit.run_once()
    assert ("prod-logs", "missing-entry", "enforce") in series()
    text = cluster.POLICY_FILE.read_text().replace("  - name: prod-logs\n", "  - name: prod-logs-gone\n", 1)
    text = text.replace("    inject: [log-shipper]\n    mandatory: true\n", "    resources: {missingLimits: warn}\n", 1)
    changed = tmp_path / "policy.yaml"
    changed.write_text(text)
    holder.current = Configuration(cluster.CATALOGUE, cluster.CONFIGURATION.settings,
                                   policy.load(changed, cluster.CATALOGUE))
    api.delete(cluster.pod_path("test", "api-big"))
    assert audit.run_once()
    now = series()
    assert ("prod-logs", "missing-entry", "enforce") not in now
    assert ("small-pods", "too-many-containers", "enforce") not in now  # its one Pod is gone
    # The new rule comes first with resources, so it decides: the two Pods created without limits now warn.
    assert now[("prod-logs-gone", "missing-limits", "enforce")] == 2


def test_a_failed_pass_is_counted_and_logged_and_keeps_the_last_values(api, caplog):
    audit = loop(api)
    assert audit.run_once()
    before = series()
    failures = value("podpatterns_audit_runs_total", result="failure")
    api.fault("GET", "/api/v1/pods", status=500, message="etcdserver: request timed out")
    assert audit.run_once() is False
    assert value("podpatterns_audit_runs_total", result="failure") == failures + 1
    assert series() == before and value("podpatterns_audit_last_success_timestamp_seconds") == 1_750_000_000.0
    assert any("audit failed; retried at the next interval" in r.getMessage() for r in caplog.records)
    assert audit.run_once() is True  # the next interval


def test_two_replicas_write_each_report_once(api):
    first, second = loop(api, write_reports=True), loop(api, write_reports=True)
    assert first.run_once()
    written = sorted(p for p in api.objects if "/policyreports/" in p)
    assert len(written) == 7  # tools is skipped by the server
    api.requests.clear()
    assert second.run_once()
    assert api.requested("PUT") == [] and api.requested("POST") == []


def test_without_the_crd_each_pass_fails_and_says_why(api, caplog):
    api.fault("GET", "/apis/wgpolicyk8s.io/v1alpha2/policyreports", status=404, reason="NotFound",
              message="the server could not find the requested resource", times=5)
    failures = value("podpatterns_audit_runs_total", result="failure")
    assert loop(api, write_reports=True).run_once() is False
    assert value("podpatterns_audit_runs_total", result="failure") == failures + 1
    assert series()  # the findings are still published
    logged = [r for r in caplog.records if "audit failed" in r.getMessage()]
    assert "no PolicyReport resource" in logged[-1].fields["error"]


@pytest.mark.slow
def test_serve_audits_in_the_background_and_a_failing_pass_never_stops_it(tmp_path):
    """`podpatterns serve --audit-interval` as a user starts it: the first pass fails (the API refuses the Pod list),
    the server goes on answering, the next pass succeeds, and /metrics says both."""
    with KubeApi() as api:
        cluster.populate(api)
        api.fault("GET", "/api/v1/pods", status=503, reason="ServiceUnavailable", message="apiserver is shutting down")
        env = {**os.environ, "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        server = Server(tmp_path, "--quiet", "--watch-namespaces", "--policy", str(cluster.POLICY_FILE),
                        "--kube-version", "1.36", "--audit-interval", "0.5", "--audit-write-reports",
                        "--audit-skip-namespace", "tools", env=env)
        try:
            deadline = time.monotonic() + 30
            text = ""
            while time.monotonic() < deadline:
                text = server.client.get("/metrics").text
                if 'podpatterns_audit_runs_total{result="success"} 1.0' in text:
                    break
                time.sleep(0.2)
            assert 'podpatterns_audit_runs_total{result="failure"} 1.0' in text, server.output()
            assert 'podpatterns_audit_runs_total{result="success"} 1.0' in text, server.output()
            assert ('podpatterns_audit_findings{enforcement="enforce",kind="missing-entry",rule="prod-logs"} 2.0'
                    in text)
            assert server.client.get("/healthz").status_code == 200
            assert api.get(cluster.report_path("prod")) is not None
        finally:
            server.stop()
        assert '"message":"audit failed; retried at the next interval"' in server.output()


def test_the_settings_file_takes_the_audit_settings(tmp_path):
    from webhook.cli import commands, settingsfile

    path = tmp_path / "settings.yaml"
    path.write_text("audit-interval: 300\naudit-write-reports: true\naudit-skip-namespace: [monitoring, ingress]\n")
    assert settingsfile.flags(str(path), commands._parser().serve_parser) == [
        "--audit-interval", "300", "--audit-write-reports", "--audit-skip-namespace", "monitoring",
        "--audit-skip-namespace", "ingress"]
    path.write_text("audit-interval: -1\n")
    with pytest.raises(settingsfile.SettingsError, match="audit-interval: must be 0 .off. or a number of seconds, got -1"):
        settingsfile.flags(str(path), commands._parser().serve_parser)


def test_serve_refuses_to_write_reports_without_an_audit(tmp_path):
    done = subprocess.run([*podpatterns_command(), "serve", "--audit-write-reports"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("podpatterns serve: --audit-write-reports writes what the background audit finds: it needs "
                           "--audit-interval SECONDS\n")
