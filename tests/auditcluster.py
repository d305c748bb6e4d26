"""A cluster to audit, in the stand-in API: its Namespaces, the policy of tests/policy/audit-policy.yaml, and
Pods as they come to be stored — injected by admission (the real engine's plan applied with jsonpatch), created
while the webhook failed open (nothing injected), with a forged status, created before a rule, over a cap, without
limits, in warn and audit rollouts — plus Pods admission never sees (kube-system, a mirror Pod, a finished Job's
Pod).

Used by tests/test_audit.py, tests/test_policyreports.py, tests/test_auditloop.py and tests/test_chart_audit.py.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any, Iterator

from tests.helpers import ROOT, apply, assert_valid_pod
from tests.kubeapi import KubeApi
from webhook.catalog import catalogue, policy
from webhook.cli import commands as cli
from webhook.core import engine, rules
from webhook.core.configuration import Configuration
from webhook.core.namespaces import namespaces_in

POLICY_FILE = ROOT / "tests" / "policy" / "audit-policy.yaml"
CATALOGUE = catalogue.load()
CONFIGURATION = Configuration(CATALOGUE, engine.Settings(), policy.load(POLICY_FILE, CATALOGUE))
LIMITS = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
# Namespace -> (labels, annotations). `tools` is labelled like prod (for --skip-namespace).
NAMESPACE_LABELS = {
    "prod": ({"env": "prod"}, {}),
    "dev": ({"env": "dev"}, {"podpatterns.io/inject": "json-log-adapter"}),
    "test": ({"env": "test"}, {"podpatterns.io/inject": "log-shipper, no-such-entry"}),
    "sandbox": ({"tier": "sandbox"}, {}),
    "staging": ({"rollout": "warn"}, {}),
    "canary": ({"rollout": "audit"}, {}),
    "default": ({}, {}),
    "kube-system": ({}, {}),
    "tools": ({"env": "prod"}, {}),
}

# What the audit finds: (namespace, Pod, rule, kind, enforcement, what admission would do).
FINDINGS = {
    ("prod", "web-failopen", "prod-logs", "missing-entry", "enforce", "inject"),
    ("prod", "web-forged", "prod-logs", "missing-entry", "enforce", "inject"),
    ("test", "api-nolimits", "test-limits", "missing-limits", "enforce", "deny"),
    ("test", "api-big", "small-pods", "too-many-containers", "enforce", "deny"),
    ("sandbox", "tool-forbidden", "sandbox-entries", "entry-not-allowed", "enforce", "deny"),
    ("dev", "app-dev", "dev-limits", "missing-limits", "enforce", "warn"),
    ("staging", "svc-staging", "staging-logs", "missing-entry", "warn", "warn"),
    ("canary", "svc-canary", "canary-logs", "missing-entry", "audit", "report"),
    ("canary", "svc-canary-ok", "canary-cap", "too-many-containers", "audit", "report"),
    ("default", "logs-json-failopen", "json-logs-on-request", "missing-entry", "enforce", "inject"),
    ("default", "db-client", "", "invalid", "enforce", "deny"),
    ("tools", "web-tools", "prod-logs", "missing-entry", "enforce", "inject"),
    # Created without limits where prod-limits sets defaults: admission would have set them.
    ("prod", "web-failopen", "prod-limits", "missing-limits", "enforce", "default"),
    ("prod", "web-forged", "prod-limits", "missing-limits", "enforce", "default"),
    ("tools", "web-tools", "prod-limits", "missing-limits", "enforce", "default"),
}
CHECKED = 17  # Pods checked with -A: all but the three skipped
SKIPPED = {"excluded-namespace": 1, "mirror": 1, "terminated": 1}


def namespace_objects() -> list[dict[str, Any]]:
    # Labelled kubernetes.io/metadata.name, as the API server labels every Namespace.
    return [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": name, "labels": {**labels, "kubernetes.io/metadata.name": name},
                          "annotations": dict(annotations)}}
            for name, (labels, annotations) in NAMESPACE_LABELS.items()]


NAMESPACES = namespaces_in(namespace_objects())


def app_pod(name: str, namespace: str, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
            limits: bool = False, containers: int = 1, phase: str = "Running") -> dict[str, Any]:
    """A Pod as its author wrote it (before admission), with the status the kubelet gives it."""
    spec = {"containers": [{"name": "app" if i == 0 else f"app-{i + 1}", "image": "ghcr.io/example/app:2.4.1",
                            **({"resources": copy.deepcopy(LIMITS)} if limits else {})} for i in range(containers)]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name, **(labels or {})},
                         "annotations": dict(annotations or {})},
            "spec": spec, "status": {"phase": phase}}


def admitted(pod: dict[str, Any], configuration: Configuration = CONFIGURATION) -> dict[str, Any]:
    """The Pod as admission stored it under `configuration`: the engine's plan applied with jsonpatch."""
    namespace = pod["metadata"]["namespace"]
    plan = engine.plan(pod, configuration.catalogue, configuration.settings, namespace, "",
                       NAMESPACES.lookup(namespace), configuration.policy)
    assert plan.denial is None, plan.denial
    stored = apply(pod, plan.ops)
    assert_valid_pod({k: v for k, v in stored.items() if k != "status"})
    return stored


def forged(pod: dict[str, Any], entry: str) -> dict[str, Any]:
    """A status annotation claiming `entry`, without its containers."""
    digest = CATALOGUE[entry].digest
    pattern = CATALOGUE[entry].pattern
    pod["metadata"]["annotations"]["podpatterns.io/status"] = json.dumps([{"entry": entry, "pattern": pattern,
                                                                            "digest": digest}])
    return pod


def pods() -> list[dict[str, Any]]:
    before_rules = Configuration(CATALOGUE, engine.Settings(), rules.EMPTY)
    mirror = app_pod("static-web-node1", "prod")
    mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"] = "3f1c0a"
    return [
        admitted(app_pod("web-injected", "prod")),
        app_pod("web-failopen", "prod"),  # created while the webhook failed open
        forged(app_pod("web-forged", "prod"), "log-shipper"),
        mirror,
        app_pod("migrate-done", "prod", phase="Succeeded"),
        app_pod("api-nolimits", "test"),
        app_pod("api-big", "test", limits=True, containers=3),
        admitted(app_pod("api-ok", "test", limits=True)),
        # Created before the sandbox rule restricted what its Pods may ask for.
        admitted(app_pod("tool-forbidden", "sandbox", {"podpatterns.io/inject": "log-shipper"}), before_rules),
        admitted(app_pod("app-dev", "dev")),  # admitted with a warning: no limits
        app_pod("svc-staging", "staging", limits=True),
        app_pod("svc-canary", "canary", limits=True),
        app_pod("plain", "default"),
        app_pod("logs-json-failopen", "default", labels={"logs": "json"}),
        app_pod("db-client", "default", {"podpatterns.io/inject": "db-ambassador"}),  # no upstream: refused
        app_pod("kube-proxy-x7k2p", "kube-system"),
        app_pod("web-tools", "tools"),
        admitted(app_pod("worker-injected", "prod", limits=True)),
        admitted(app_pod("svc-canary-ok", "canary", {"podpatterns.io/inject": "json-log-adapter"}, limits=True)),
        admitted(app_pod("app-dev-ok", "dev", limits=True)),
    ]


@contextlib.contextmanager
def populated() -> Iterator[KubeApi]:
    with KubeApi() as running:
        populate(running)
        yield running


def run(api: KubeApi, tmp_path: Path, capsys: Any, *args: str) -> tuple[int, str, str]:
    """`podpatterns audit ARGS` against `api`, as a user runs it: (exit code, stdout, stderr)."""
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    capsys.readouterr()
    code = cli.main(["audit", "--kubeconfig", str(kubeconfig), *args])
    out, err = capsys.readouterr()
    return code, out, err


def populate(api: KubeApi) -> None:
    for namespace in namespace_objects():
        api.put(namespace, f"/api/v1/namespaces/{namespace['metadata']['name']}")
    for pod in pods():
        store(api, pod)


def store(api: KubeApi, pod: dict[str, Any]) -> None:
    api.put(pod, pod_path(pod["metadata"]["namespace"], pod["metadata"]["name"]))


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def report_path(namespace: str) -> str:
    return f"/apis/wgpolicyk8s.io/v1alpha2/namespaces/{namespace}/policyreports/podpatterns-audit"


def found(data: dict[str, Any]) -> set[tuple[str, str, str, str, str, str]]:
    """The findings of `podpatterns audit -o json`, as FINDINGS writes them."""
    return {(f["namespace"], f["pod"], f["rule"], f["kind"], f["enforcement"], f["admission"]) for f in data["findings"]}
