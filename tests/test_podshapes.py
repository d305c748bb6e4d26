"""Pods the entries must not break or endanger (README, "Pods the entries leave alone or adapt to"):
Pod-level resources, host network, Windows, mirror Pods, envFrom, the Pod's namespace from the downward API.
Through the HTTP endpoint with the recorded review as envelope, and `podpatterns inject` where a policy
or a Namespace takes part."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
import yaml
from kubernetes.utils import parse_quantity

from tests.helpers import apply, ops_of, pod_schema, review
from webhook.cli import commands as cli

ALL_THREE = {"podpatterns.io/inject": "db-ambassador, log-shipper, json-log-adapter",
             "db-ambassador.podpatterns.io/upstream": "pg.prod.svc:5432"}

# The Kubernetes documentation's own example (concepts/workloads/pods/pod-level-resources.yaml).
POD_LEVEL_RESOURCES = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "pod-resources-demo", "namespace": "pod-resources-example"},
    "spec": {
        "resources": {"limits": {"cpu": "1", "memory": "200Mi"}, "requests": {"cpu": "1", "memory": "100Mi"}},
        "containers": [
            {"name": "pod-resources-demo-ctr-1", "image": "nginx",
             "resources": {"limits": {"cpu": "0.5", "memory": "100Mi"}, "requests": {"cpu": "0.5", "memory": "50Mi"}}},
            {"name": "pod-resources-demo-ctr-2", "image": "fedora", "command": ["sleep", "inf"]},
        ],
    },
}


def mutate(server, pod: dict, annotations: dict[str, str]) -> tuple[dict, dict]:
    """The recorded CREATE review carrying `pod` with `annotations`: (the response, the patched Pod or None)."""
    body = review("pod-create-annotated")
    pod = copy.deepcopy(pod)
    pod.setdefault("metadata", {})["annotations"] = annotations
    body["request"]["object"] = pod
    reply = server.mutate(body)
    assert reply.status_code == 200, reply.text
    response = reply.json()["response"]
    patched = apply(pod, ops_of(response)) if response.get("patch") else None
    return response, patched


def containers_total(pod: dict, kind: str, resource: str) -> Decimal:
    """The apiserver's aggregate for Pod-level resources: regular containers plus restartable init
    containers (native sidecars), which run alongside them."""
    spec = pod["spec"]
    running = spec["containers"] + [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return sum((parse_quantity(c.get("resources", {}).get(kind, {}).get(resource, 0)) for c in running), Decimal(0))


def test_pod_level_resources_grow_by_what_is_injected_so_the_apiserver_accepts_the_pod(server):
    response, patched = mutate(server, POD_LEVEL_RESOURCES, ALL_THREE)
    assert response["allowed"], response
    pod_schema("1.36").validate(patched)  # spec.resources is not in the 1.30 schema
    own, injected = POD_LEVEL_RESOURCES["spec"]["resources"], patched["spec"]["initContainers"]
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            now = parse_quantity(patched["spec"]["resources"][kind][resource])
            added = sum((parse_quantity(c["resources"][kind][resource]) for c in injected), Decimal(0))
            # The app's budget is what it was, and the Pod covers its containers (the apiserver's rule).
            assert now - added == parse_quantity(own[kind][resource]), (kind, resource)
            assert now >= containers_total(patched, kind, resource), (kind, resource)
    # Without the change the apiserver's own check fails: 100Mi against 130Mi of container requests.
    assert containers_total(patched, "requests", "memory") > parse_quantity(own["requests"]["memory"])


def test_a_pod_limited_at_pod_level_counts_as_limited_and_gets_no_per_container_defaults(tmp_path, capsys):
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"apiVersion": "podpatterns.io/v1alpha1", "kind": "Policy", "spec": {"rules": [
        {"name": "limits", "resources": {"missingLimits": "deny"}}]}}))
    manifest = tmp_path / "pod.yaml"
    pod = copy.deepcopy(POD_LEVEL_RESOURCES)
    pod["metadata"]["annotations"] = {"podpatterns.io/inject": "log-shipper"}
    manifest.write_text(yaml.safe_dump(pod))
    # ctr-2 has no limits of its own: the Pod's limits cover it.
    assert cli.main(["inject", "-f", str(manifest), "--policy", str(policy)]) == 0
    capsys.readouterr()
    del pod["spec"]["resources"]["limits"]["memory"]
    manifest.write_text(yaml.safe_dump(pod))
    assert cli.main(["inject", "-f", str(manifest), "--policy", str(policy)]) == 1
    assert "pod-resources-demo-ctr-2 memory" in capsys.readouterr().err

    policy.write_text(yaml.safe_dump({"apiVersion": "podpatterns.io/v1alpha1", "kind": "Policy", "spec": {"rules": [
        {"name": "limits", "resources": {"missingLimits": "default", "defaults": {
            "requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}}}]}}))
    pod = copy.deepcopy(POD_LEVEL_RESOURCES)
    manifest.write_text(yaml.safe_dump(pod))
    assert cli.main(["inject", "-f", str(manifest), "--policy", str(policy)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert "resources" not in out["spec"]["containers"][1], "a per-container default would break the Pod's budget"
    assert out["spec"]["resources"] == POD_LEVEL_RESOURCES["spec"]["resources"]


def test_host_network_pods_refuse_an_entry_that_listens_and_take_one_that_does_not(server):
    response, _ = mutate(server, {**review("pod-create-annotated")["request"]["object"]} | {
        "spec": {"hostNetwork": True, "containers": [{"name": "app", "image": "app:1"}]}}, ALL_THREE)
    assert not response["allowed"]
    message = response["status"]["message"]
    assert "db-ambassador" in message and "hostNetwork" in message and "5432/TCP" in message, message
    response, patched = mutate(server, {"metadata": {"name": "node-agent", "namespace": "default"},
                                        "spec": {"hostNetwork": True, "containers": [{"name": "app", "image": "a"}]}},
                               {"podpatterns.io/inject": "log-shipper"})
    assert response["allowed"] and [c["name"] for c in patched["spec"]["initContainers"]] == ["log-shipper"]


def windows_pod() -> dict:
    return {"metadata": {"name": "win", "namespace": "shop"},
            "spec": {"os": {"name": "windows"}, "containers": [{"name": "iis", "image": "mcr.microsoft.com/iis"}]}}


def test_a_windows_pod_that_asks_for_an_entry_is_denied(server):
    response, _ = mutate(server, windows_pod(), {"podpatterns.io/inject": "log-shipper"})
    assert not response["allowed"]
    assert "windows" in response["status"]["message"] and "log-shipper" in response["status"]["message"]


def test_a_windows_pod_skips_namespace_defaults_with_a_warning_and_is_denied_by_a_mandatory_rule(tmp_path, capsys):
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": "shop", "labels": {"env": "prod"},
                              "annotations": {"podpatterns.io/inject": "json-log-adapter"}}}
    pod = {"apiVersion": "v1", "kind": "Pod", **windows_pod()}
    manifest = tmp_path / "all.yaml"
    manifest.write_text(yaml.safe_dump_all([namespace, pod]))
    assert cli.main(["inject", "-f", str(manifest)]) == 0
    captured = capsys.readouterr()
    out = [d for d in yaml.safe_load_all(captured.out) if d["kind"] == "Pod"][0]
    assert out == pod, "nothing injected into a Windows Pod"
    assert "json-log-adapter" in captured.err and "Windows" in captured.err
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"apiVersion": "podpatterns.io/v1alpha1", "kind": "Policy", "spec": {"rules": [
        {"name": "prod-logs", "namespaceSelector": {"matchLabels": {"env": "prod"}}, "inject": ["log-shipper"],
         "mandatory": True}]}}))
    assert cli.main(["inject", "-f", str(manifest), "--policy", str(policy)]) == 1
    assert "log-shipper is mandatory by rule prod-logs" in capsys.readouterr().err


def test_a_mirror_pod_is_never_changed(server):
    pod = {"metadata": {"name": "etcd-node1", "namespace": "kube-system"},
           "spec": {"containers": [{"name": "etcd", "image": "etcd"}]}}
    response, patched = mutate(server, pod, {"podpatterns.io/inject": "log-shipper",
                                             "kubernetes.io/config.mirror": "0f3c…"})
    assert response["allowed"] and patched is None and "patch" not in response
    assert any("mirror Pod" in w for w in response["warnings"])


def test_app_containers_taking_envfrom_are_warned_that_injected_variables_win(server):
    pod = {"metadata": {"name": "api", "namespace": "shop"}, "spec": {"containers": [
        {"name": "api", "image": "api:1", "envFrom": [{"configMapRef": {"name": "db-config"}}]}]}}
    response, patched = mutate(server, pod, ALL_THREE)
    assert response["allowed"]
    warning = next(w for w in response["warnings"] if "envFrom" in w and "db-ambassador" in w)
    assert "configMapRef db-config" in warning and "DB_HOST, DB_PORT" in warning
    assert {"name": "DB_HOST", "value": "127.0.0.1"} in patched["spec"]["containers"][0]["env"]


def test_the_namespace_of_the_shipper_comes_from_the_downward_api_even_offline(tmp_path, capsys):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "generateName": "web-", "annotations": {"podpatterns.io/inject": "log-shipper"}},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}}))
    assert cli.main(["inject", "-f", str(manifest)]) == 0
    shipper = yaml.safe_load(capsys.readouterr().out)["spec"]["initContainers"][0]
    env = {e["name"]: e for e in shipper["env"]}
    assert env["POD_NAMESPACE"] == {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "default" not in " ".join(shipper["args"])


@pytest.mark.parametrize("value", ["/", "/etc", "/var/log/../../etc", "/fluent-bit/bin", "/var/lib/podpatterns/x",
                                   "/usr/share/logs", "relative/logs", "/var"])
def test_log_dir_refuses_system_directories_and_the_sidecars_own(server, value):
    response, _ = mutate(server, review("pod-create-annotated")["request"]["object"],
                         {"podpatterns.io/inject": "log-shipper", "log-shipper.podpatterns.io/logDir": value})
    assert not response["allowed"]
    message = response["status"]["message"]
    assert "log-shipper.podpatterns.io/logDir" in message and "absolute directory path" in message, message
