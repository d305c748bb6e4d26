"""`podpatterns status` against the stand-in API: Pods injected by the real engine, grouped by their workloads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, apply, assert_valid_pod, podpatterns_command
from tests.kubeapi import KubeApi
from webhook.catalog import catalogue
from webhook.cli import commands as cli
from webhook.core import engine

STATUS = "podpatterns.io/status"
BUILTIN_DIR = ROOT / "webhook" / "catalog" / "builtin"
CURRENT = catalogue.builtin_entries()["log-shipper"].digest
ADAPTER = catalogue.builtin_entries()["json-log-adapter"].digest
POLICY = """\
apiVersion: podpatterns.io/v1alpha1
kind: Policy
spec:
  rules:
  - name: prod-logs
    namespaceSelector: {matchLabels: {env: prod}}
    inject: [log-shipper]
    mandatory: true
"""


def old_catalogue(directory: Path) -> catalogue.Catalogue:
    """The catalogue as it was before log-shipper's bufferMB default changed: what the stale Pods were injected with."""
    directory.mkdir(exist_ok=True)
    text = (BUILTIN_DIR / "log-shipper.yaml").read_text()
    assert "    default: 256\n" in text
    (directory / "log-shipper.yaml").write_text(text.replace("    default: 256\n", "    default: 128\n"))
    return catalogue.load([str(directory)])


def owner(kind: str, name: str) -> list[dict[str, Any]]:
    api_version = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    return [{"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True,
             "blockOwnerDeletion": True}]


def pod(name: str, namespace: str, inject: str | None = "log-shipper", owned_by: tuple[str, str] | None = None,
        entries: catalogue.Catalogue | None = None) -> dict[str, Any]:
    """A Pod as admission stored it: the real engine's plan applied with jsonpatch; `entries` is the catalogue the
    webhook had then (the built-ins by default)."""
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": namespace, "labels": {"app": name.split("-")[0]},
                                        "annotations": {"podpatterns.io/inject": inject} if inject else {}},
                           "spec": {"containers": [{"name": "app", "image": "ghcr.io/example/app:2.4.1"}]}}
    if owned_by:
        obj["metadata"]["ownerReferences"] = owner(*owned_by)
    if not inject:
        return obj
    plan = engine.plan(obj, entries or catalogue.load(), engine.Settings())
    assert plan.denial is None and plan.injected == [e.strip() for e in inject.split(",")]
    injected = apply(obj, plan.ops)
    assert_valid_pod(injected)
    return injected


def store_pod(api: KubeApi, obj: dict[str, Any]) -> None:
    api.put(obj, f"/api/v1/namespaces/{obj['metadata']['namespace']}/pods/{obj['metadata']['name']}")


def workload(kind: str, name: str, namespace: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    """A workload whose last rollout is complete (its status as its controller leaves it)."""
    template = {"metadata": {"labels": {"app": name}, "annotations": {"podpatterns.io/inject": "log-shipper"}},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/example/app:2.4.1"}]}}
    obj = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": namespace},
           "spec": {"selector": {"matchLabels": {"app": name}}, "template": template, **spec}}
    if kind == "DaemonSet":
        obj["status"] = {"observedGeneration": 1, "desiredNumberScheduled": replicas, "currentNumberScheduled": replicas,
                         "updatedNumberScheduled": replicas, "numberAvailable": replicas, "numberReady": replicas}
    else:
        obj["spec"]["replicas"] = replicas
        obj["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                         "readyReplicas": replicas, "availableReplicas": replicas, "currentReplicas": replicas,
                         "currentRevision": f"{name}-1", "updateRevision": f"{name}-1"}
    return obj


PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets",
          "ReplicaSet": "replicasets", "Job": "jobs", "CronJob": "cronjobs"}


def store(api: KubeApi, obj: dict[str, Any]) -> str:
    group = "batch" if obj["kind"] in ("Job", "CronJob") else "apps"
    path = f"/apis/{group}/v1/namespaces/{obj['metadata']['namespace']}/{PLURAL[obj['kind']]}/{obj['metadata']['name']}"
    api.put(obj, path)
    return path


def child(kind: str, name: str, namespace: str, parent: tuple[str, str] | None) -> dict[str, Any]:
    """A ReplicaSet or Job, owned by `parent` (a Deployment, a CronJob) or by nothing."""
    obj = {"apiVersion": "batch/v1" if kind == "Job" else "apps/v1", "kind": kind,
           "metadata": {"name": name, "namespace": namespace}, "spec": {"template": {"spec": {"containers": []}}}}
    if parent:
        obj["metadata"]["ownerReferences"] = owner(*parent)
    return obj


def populate(api: KubeApi, tmp_path: Path) -> None:
    """Namespace shop: a Deployment mid-rollout (an old ReplicaSet's two stale Pods, a new one's current Pod), a
    StatefulSet and a DaemonSet, a CronJob's Job and a lone Job, a bare Pod with a forged status, one whose status
    names an entry the catalogue no longer has, and an app without podpatterns. Namespace prod (env=prod, where
    a mandatory rule adds log-shipper): a Deployment whose Pod was created while the webhook failed open."""
    old = old_catalogue(tmp_path / "old-catalogue")
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {"kubernetes.io/metadata.name": "shop"}}},
            "/api/v1/namespaces/shop")
    api.put({"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"labels": {"kubernetes.io/metadata.name": "prod", "env": "prod"}}}, "/api/v1/namespaces/prod")
    store(api, workload("Deployment", "checkout", "shop", replicas=3))
    store(api, child("ReplicaSet", "checkout-5d4f8b", "shop", ("Deployment", "checkout")))
    store(api, child("ReplicaSet", "checkout-7c9b2a", "shop", ("Deployment", "checkout")))
    for name in ("checkout-5d4f8b-x2k9p", "checkout-5d4f8b-q8w3z"):
        store_pod(api, pod(name, "shop", owned_by=("ReplicaSet", "checkout-5d4f8b"), entries=old))
    store_pod(api, pod("checkout-7c9b2a-m4n7r", "shop", owned_by=("ReplicaSet", "checkout-7c9b2a")))
    store(api, workload("StatefulSet", "orders", "shop"))
    store_pod(api, pod("orders-0", "shop", "log-shipper, json-log-adapter", owned_by=("StatefulSet", "orders")))
    store(api, workload("DaemonSet", "node-agent", "shop"))
    store_pod(api, pod("node-agent-h7t2c", "shop", owned_by=("DaemonSet", "node-agent"), entries=old))
    store(api, child("Job", "nightly-29014", "shop", ("CronJob", "nightly")))
    store_pod(api, pod("nightly-29014-5kq2d", "shop", owned_by=("Job", "nightly-29014"), entries=old))
    store(api, child("Job", "migrate", "shop", None))
    store_pod(api, pod("migrate-8fj3w", "shop", owned_by=("Job", "migrate"), entries=old))
    forged = pod("debug", "shop", inject=None)
    forged["metadata"]["annotations"][STATUS] = json.dumps([{"entry": "log-shipper", "pattern": "sidecar", "digest": CURRENT}])
    store_pod(api, forged)
    gone = pod("tracer", "shop", inject="json-log-adapter")
    records = json.loads(gone["metadata"]["annotations"][STATUS])
    gone["metadata"]["annotations"][STATUS] = json.dumps(records + [{"entry": "trace-agent", "pattern": "sidecar",
                                                                    "digest": "sha256:1f2e3d4c5b6a7980"}])
    store_pod(api, gone)
    store_pod(api, pod("plain", "shop", inject=None))
    store(api, workload("Deployment", "billing", "prod", replicas=1))
    store(api, child("ReplicaSet", "billing-6b8d9f", "prod", ("Deployment", "billing")))
    store_pod(api, pod("billing-6b8d9f-r2d2x", "prod", inject=None, owned_by=("ReplicaSet", "billing-6b8d9f")))


@pytest.fixture
def cluster(tmp_path):
    with KubeApi() as api:
        populate(api, tmp_path)
        (tmp_path / "policy.yaml").write_text(POLICY)
        yield api, str(api.kubeconfig(tmp_path / "kubeconfig")), str(tmp_path / "policy.yaml")


def status(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["status", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_groups_pods_by_workload_with_their_digests_and_states(cluster, capsys):
    api, kubeconfig, policy = cluster
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-n", "shop", "--policy", policy)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].split() == ["WORKLOAD", "ENTRY", "DIGEST", "STATE", "PODS"]
    old = old_catalogue_digest()
    rows = [line.split() for line in lines[1:lines.index("")]]
    assert rows == [
        ["cronjob/nightly", "log-shipper", old, "stale", "1/1"],
        ["daemonset/node-agent", "log-shipper", old, "stale", "1/1"],
        # The rollout in progress: the old ReplicaSet's Pods stale, the new one's current, under the Deployment.
        ["deployment/checkout", "log-shipper", CURRENT, "current", "1/3"],
        ["deployment/checkout", "log-shipper", old, "stale", "2/3"],
        ["job/migrate", "log-shipper", old, "stale", "1/1"],
        ["pod/debug", "log-shipper", CURRENT, "forged", "1/1"],
        ["pod/tracer", "json-log-adapter", ADAPTER, "current", "1/1"],
        ["pod/tracer", "trace-agent", "sha256:1f2e3d4c5b6a7980", "unknown-entry", "1/1"],
        ["statefulset/orders", "log-shipper", CURRENT, "current", "1/1"],
        ["statefulset/orders", "json-log-adapter", ADAPTER, "current", "1/1"],
    ]
    problems = lines[lines.index("") + 1:]
    assert problems[0].split() == ["POD", "WORKLOAD", "PROBLEM", "DETAIL"]
    assert problems[1].split(None, 3) == ["debug", "pod/debug", "forged",
                                          f"annotation {STATUS} lists log-shipper, but the Pod has no container log-shipper"]
    assert problems[2].split(None, 3) == ["tracer", "pod/tracer", "unknown-entry",
                                          f"annotation {STATUS} lists trace-agent, which the catalogue no longer has"]
    assert len(problems) == 3
    # The Pod without podpatterns is not listed; only reads were made, each ReplicaSet and Job read once.
    assert "plain" not in out
    assert {r.method for r in api.requests} == {"GET"}
    assert len(api.requested("GET", "/apis/apps/v1/namespaces/shop/replicasets/checkout-5d4f8b")) == 1
    # Its labels decide whether the mandatory rule selects its Pods: the Namespace is read once.
    assert len(api.requested("GET", "/api/v1/namespaces/shop")) == 1


def old_catalogue_digest() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        return old_catalogue(Path(directory) / "old")["log-shipper"].digest


def test_json_is_the_documented_structure_and_a_pod_created_fail_open_lacks_its_mandatory_entry(cluster, capsys):
    api, kubeconfig, policy = cluster
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-A", "--policy", policy, "-o", "json")
    assert code == 1, err
    data = json.loads(out)
    assert list(data) == ["workloads", "summary"]
    assert data["summary"] == {"workloads": 8, "pods": 10, "stalePods": 5, "flaggedPods": 3}
    by_name = {(w["namespace"], w["kind"], w["name"]): w for w in data["workloads"]}
    checkout = by_name["shop", "Deployment", "checkout"]
    assert checkout == {
        "namespace": "shop", "kind": "Deployment", "name": "checkout", "pods": 3, "stalePods": 2, "flaggedPods": 0,
        "entries": [
            {"entry": "log-shipper", "pattern": "sidecar", "digest": CURRENT, "state": "current", "currentDigest": CURRENT, "pods": 1},
            {"entry": "log-shipper", "pattern": "sidecar", "digest": old_catalogue_digest(), "state": "stale",
             "currentDigest": CURRENT, "pods": 2},
        ],
        "problems": [],
    }
    billing = by_name["prod", "Deployment", "billing"]
    assert billing["entries"] == [{"entry": "log-shipper", "pattern": "sidecar", "digest": "", "state": "missing-entry",
                                   "currentDigest": CURRENT, "pods": 1}]
    assert billing["problems"] == [{"pod": "billing-6b8d9f-r2d2x", "entry": "log-shipper", "state": "missing-entry",
                                    "message": "the Pod lacks log-shipper (mandatory by rule prod-logs)"}]
    # Namespaces are listed once, for the rules' namespaceSelectors.
    assert len(api.requested("GET", "/api/v1/namespaces")) == 1
    # yaml carries the same structure.
    code, out, _ = status(capsys, "--kubeconfig", kubeconfig, "-A", "--policy", policy, "-o", "yaml")
    assert code == 1 and yaml.safe_load(out) == data


def test_stale_shows_only_workloads_with_stale_pods_and_the_table_names_namespaces_with_all(cluster, capsys):
    _, kubeconfig, policy = cluster
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-A", "--stale", "--policy", policy)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "WORKLOAD", "ENTRY", "DIGEST", "STATE", "PODS"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["shop", "cronjob/nightly"], ["shop", "daemonset/node-agent"],
        ["shop", "deployment/checkout"], ["shop", "deployment/checkout"], ["shop", "job/migrate"]]
    assert "billing" not in out and "debug" not in out  # flagged, not stale: not shown


def test_nothing_stale_exits_0_and_says_so_on_stderr(cluster, capsys):
    api, kubeconfig, _ = cluster
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-n", "prod", "--stale")
    assert (code, out) == (0, "")
    assert err == "No stale Pods found in namespace prod.\n"
    # Without the policy, the fail-open Pod in prod is nothing podpatterns knows of.
    api.requests.clear()
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-n", "prod", "-o", "json")
    assert code == 0 and json.loads(out)["workloads"] == []
    assert not api.requested("GET", "/api/v1/namespaces/prod")  # no mandatory rule: no Namespace read


def test_current_pods_only_exit_0(tmp_path, capsys):
    with KubeApi() as api:
        store(api, workload("StatefulSet", "orders", "shop"))
        store_pod(api, pod("orders-0", "shop", owned_by=("StatefulSet", "orders")))
        code, out, err = status(capsys, "--kubeconfig", str(api.kubeconfig(tmp_path / "kc")), "-n", "shop")
    assert code == 0, err
    assert out.splitlines()[1].split() == ["statefulset/orders", "log-shipper", CURRENT, "current", "1/1"]


def test_the_control_planes_namespaces_are_not_held_to_a_cluster_wide_mandatory_rule(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("    namespaceSelector: {matchLabels: {env: prod}}\n", ""))
    with KubeApi() as api:
        for namespace in ("kube-system", "team-a", "podpatterns"):
            api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}, f"/api/v1/namespaces/{namespace}")
            store_pod(api, pod(f"app-{namespace}", namespace, inject=None))
        kubeconfig = str(api.kubeconfig(tmp_path / "kc"))
        code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-A", "--policy", str(policy), "-o", "json")
    assert code == 1, err
    assert [(w["namespace"], w["name"]) for w in json.loads(out)["workloads"]] == [
        ("podpatterns", "app-podpatterns"), ("team-a", "app-team-a")]


def test_release_reads_the_catalogue_policy_and_settings_of_an_installed_release(cluster, capsys):
    """The release's catalogue overrides log-shipper with a newer version: every Pod with the built-in one is stale
    by it; its policy makes the fail-open Pod in prod flagged; its own namespace is never checked."""
    api, kubeconfig, _ = cluster
    newer = (BUILTIN_DIR / "log-shipper.yaml").read_text().replace("    default: 256\n", "    default: 512\n")
    labels = {"app.kubernetes.io/instance": "pp", "app.kubernetes.io/name": "podpatterns"}
    for role, data in (("catalogue", {"log-shipper.yaml": newer}), ("policy", {"policy.yaml": POLICY}),
                       ("settings", {"settings.yaml": "prefix: podpatterns.io\nlog-level: info\n"})):
        api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": labels}, "data": data},
                f"/api/v1/namespaces/podpatterns/configmaps/pp-podpatterns-{role}")
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-A", "--release", "pp", "--release-namespace",
                            "podpatterns", "-o", "json")
    assert code == 1, err
    data = json.loads(out)
    by_name = {w["name"]: w for w in data["workloads"]}
    assert [e["state"] for e in by_name["orders"]["entries"]] == ["stale", "current"]  # log-shipper, json-log-adapter
    assert by_name["orders"]["entries"][0]["currentDigest"] != CURRENT
    assert by_name["billing"]["problems"][0]["state"] == "missing-entry"
    assert api.requested("GET", "/api/v1/namespaces/podpatterns/configmaps")


def test_the_command_runs_as_a_user_types_it(cluster):
    _, kubeconfig, policy = cluster
    done = subprocess.run([*podpatterns_command(), "status", "--kubeconfig", kubeconfig, "-A", "--stale", "--policy",
                           policy], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0].split() == ["NAMESPACE", "WORKLOAD", "ENTRY", "DIGEST", "STATE", "PODS"]
    assert "deployment/checkout" in done.stdout and done.stderr == ""


def test_an_unreachable_api_exits_2_with_a_clear_message(tmp_path, capsys):
    api = KubeApi()
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.close()
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-n", "shop")
    assert (code, out) == (2, "")
    assert err.startswith("podpatterns status: cannot reach the Kubernetes API: ") and len(err.splitlines()) == 1
    code, _, err = status(capsys, "--kubeconfig", str(tmp_path / "missing"), "-n", "shop")
    assert code == 2 and err.startswith("podpatterns status: no cluster to talk to: ")


def test_rbac_403_exits_2_and_says_forbidden(cluster, capsys):
    api, kubeconfig, _ = cluster
    message = 'replicasets.apps "checkout-5d4f8b" is forbidden: User "dev" cannot get resource "replicasets" in API group "apps" in the namespace "shop"'
    api.fault("GET", "/apis/apps/v1/namespaces/shop/replicasets/", status=403, reason="Forbidden", message=message)
    code, out, err = status(capsys, "--kubeconfig", kubeconfig, "-n", "shop")
    assert (code, out) == (2, "")
    assert err == f"podpatterns status: forbidden: {message} (the user lacks RBAC permission; see README, Day two, " \
                  "for the rules needed)\n"


def test_with_a_release_the_namespaces_its_webhook_excludes_are_not_held_to_a_mandatory_rule(tmp_path, capsys):
    """webhook.excludedNamespaces (here: monitoring) is read off the release's MutatingWebhookConfiguration; a user
    who may not list webhook configurations is told, and only the release's own namespace is left out."""
    policy_text = POLICY.replace("    namespaceSelector: {matchLabels: {env: prod}}\n", "")
    labels = {"app.kubernetes.io/instance": "pp"}
    excluded = ["podpatterns", "kube-system", "kube-public", "kube-node-lease", "monitoring"]
    configuration = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                     "metadata": {"name": "pp-podpatterns", "labels": labels},
                     "webhooks": [{"name": name, "namespaceSelector": {"matchExpressions": [
                         {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}]}}
                         for name in ("inject.podpatterns.io", "namespace.podpatterns.io")]}
    with KubeApi() as api:
        api.put(configuration, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/pp-podpatterns")
        api.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": labels},
                 "data": {"policy.yaml": policy_text}}, "/api/v1/namespaces/podpatterns/configmaps/pp-podpatterns-policy")
        for namespace in ("monitoring", "team-a"):
            api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}, f"/api/v1/namespaces/{namespace}")
            store_pod(api, pod(f"app-{namespace}", namespace, inject=None))
        kubeconfig = str(api.kubeconfig(tmp_path / "kc"))
        args = ("--kubeconfig", kubeconfig, "-A", "--release", "pp", "--release-namespace", "podpatterns", "-o", "json")
        code, out, err = status(capsys, *args)
        assert code == 1, err
        assert [w["namespace"] for w in json.loads(out)["workloads"]] == ["team-a"]
        api.fault("GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", status=403,
                  reason="Forbidden", message="forbidden")
        code, out, err = status(capsys, *args)
        assert [w["namespace"] for w in json.loads(out)["workloads"]] == ["monitoring", "team-a"]
        assert "cannot list mutatingwebhookconfigurations (forbidden)" in err
