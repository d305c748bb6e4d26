"""`podpatterns check` against the stand-in API holding what `helm install` creates (the chart rendered by helm), what
the server makes (its certificate Secret, the caBundle) and what the controllers report (ready replicas, Running
Pods, each replica's /metrics behind the pod proxy): healthy, then broken one way per check."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from tests.helpers import Server, podpatterns_command
from tests.kubeapi import KubeApi
from tests.test_chart import FULLNAME, NAMESPACE, SCENARIOS, find, render
from webhook import certs
from webhook.cli import commands as cli
from webhook.cluster import certsecret
from webhook.server import metrics  # noqa: F401  (registers the server's metrics: a replica's /metrics below)

CLUSTER_SCOPED = {"MutatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                  "ClusterRole", "ClusterRoleBinding", "Namespace"}
SECRET = f"{FULLNAME}-tls"
SERVICE_DNS = f"{FULLNAME}.{NAMESPACE}.svc"
HEALTHY_METRICS = prometheus_client.generate_latest().decode()
APP = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop",
                                                        "annotations": {"podpatterns.io/inject": "log-shipper"}},
       "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}


def path_of(doc: dict[str, Any]) -> str:
    version, kind = doc["apiVersion"], doc["kind"]
    plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
    root = f"/apis/{version}" if "/" in version else f"/api/{version}"
    scope = "" if kind in CLUSTER_SCOPED else f"/namespaces/{doc['metadata'].get('namespace') or NAMESPACE}"
    return f"{root}{scope}/{plural}/{doc['metadata']['name']}"


def install(api: KubeApi, docs: list[dict[str, Any]], ready: int = 2, material: certsecret.Material | None = None) -> None:
    """What helm created, the server's certificate Secret and caBundle, `ready` Running replicas answering /metrics."""
    for name, labels in ((NAMESPACE, {}), ("default", {}), ("kube-system", {}), ("shop", {"env": "prod"})):
        api.put({"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **labels}}},
                f"/api/v1/namespaces/{name}")
    material = material or serving_material()
    for doc in docs:
        if "helm.sh/hook" in (doc["metadata"].get("annotations") or {}):
            continue  # helm test's objects exist only while it runs
        doc = copy.deepcopy(doc)
        if doc["kind"] == "MutatingWebhookConfiguration":
            for webhook in doc["webhooks"]:  # as the server writes it (selfManaged)
                webhook["clientConfig"].setdefault("caBundle", material.ca_bundle)
        if doc["kind"] == "Deployment":
            doc["status"] = {"replicas": ready, "readyReplicas": ready, "availableReplicas": ready}
        api.put(doc, path_of(doc))
    api.put({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": SECRET},
             "data": material.data()}, f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")
    template = find(docs, "Deployment")["spec"]["template"]
    for i in range(ready):
        name = f"{FULLNAME}-7d9f8c6b5-{i}"
        api.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": template["metadata"]["labels"]},
                 "spec": template["spec"], "status": {"phase": "Running"}}, f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        api.proxy[(NAMESPACE, proxy_target(template, name), "metrics")] = HEALTHY_METRICS


def proxy_target(template: dict[str, Any], name: str) -> str:
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    return f"{name}:{ports['health']}" if "health" in ports else f"https:{name}:{ports['https']}"


def serving_material(validity: dt.timedelta = certsecret.Lifetimes().serving) -> certsecret.Material:
    target = certsecret.Target(NAMESPACE, SECRET, FULLNAME)
    material, _ = certsecret.renewal(None, target, certsecret.Lifetimes(serving=validity), certs.now())
    return material


def check(api: KubeApi, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["check", "--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig")), "--release", "pp",
                     "-n", NAMESPACE, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def line(output: str, start: str) -> str:
    """The result line whose check starts with `start`, with its indented details and hint."""
    lines = output.splitlines()
    at = next(i for i, text in enumerate(lines) if text[2:].startswith(start))
    block = [lines[at]]
    for text in lines[at + 1:]:
        if not text.startswith("    "):
            break
        block.append(text)
    return "\n".join(block)


def injected(pod: dict[str, Any]) -> dict[str, Any]:
    """The Pod as the webhook injects it (`podpatterns inject`, the same engine)."""
    done = subprocess.run([*podpatterns_command(), "inject", "-f", "-", "-n", pod["metadata"]["namespace"]],
                          input=json.dumps(pod), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render([])


@pytest.fixture()
def api():
    with KubeApi() as running:
        yield running


def test_a_healthy_install_passes_every_check(api, chart, tmp_path, capsys):
    install(api, chart)
    pod = injected(APP)
    api.put(pod, "/api/v1/namespaces/shop/pods/web")
    code, out = check(api, tmp_path, capsys)
    assert code == 0, out
    groups = [g for g in ("kubernetes-api", "podpatterns-webhook", "podpatterns-replicas", "podpatterns-config",
                          "podpatterns-pods")]
    assert [l for l in out.splitlines() if l and not l.startswith(("✔", "-", " ", "Status"))] == groups, out
    assert "‼" not in out and "✘" not in out, out
    assert f"✔ the caBundle verifies the serving certificate (Secret {NAMESPACE}/{SECRET}, for {SERVICE_DNS}, until" in out
    assert "✔ every replica serves the catalogue and policy on disk (2 of 2 read through the pod proxy)" in out
    assert "✔ no injected Pod is stale (1 injected)" in out
    assert "✔ mandatory rules are guarded where the webhook fails open (not needed: failurePolicy Fail)" in out
    assert out.rstrip().endswith("Status check results are ✔")
    # Each replica's /metrics was read through the apiserver's pod proxy, over HTTPS (no plain health port).
    proxied = [r.path for r in api.requested("GET") if "/proxy/" in r.path]
    assert sorted(proxied) == [f"/api/v1/namespaces/{NAMESPACE}/pods/https%3A{FULLNAME}-7d9f8c6b5-{i}%3A8443/proxy/metrics"
                               for i in range(2)]


def test_the_plain_health_port_is_where_metrics_are_read_when_it_is_set(api, tmp_path, capsys):
    docs = render(SCENARIOS["plain-health-port"])
    install(api, docs)
    code, out = check(api, tmp_path, capsys)
    assert code == 0, out
    assert {r.path.split("/")[6] for r in api.requested("GET") if "/proxy/" in r.path} == {
        f"{FULLNAME}-7d9f8c6b5-{i}%3A9090" for i in range(2)}


def test_no_webhook_configuration_fails(api, chart, tmp_path, capsys):
    install(api, chart)
    api.delete(f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{FULLNAME}")
    code, out = check(api, tmp_path, capsys)
    assert code == 1, out
    assert line(out, "the MutatingWebhookConfiguration exists") == (
        "✘ the MutatingWebhookConfiguration exists\n"
        f"    no MutatingWebhookConfiguration labelled app.kubernetes.io/instance=pp calls a Service in namespace {NAMESPACE}\n"
        f"    hint: is the release installed there? helm -n {NAMESPACE} status pp")
    assert out.rstrip().endswith("Status check results are ✘")


def test_fail_open_with_a_mandatory_rule_needs_the_guard(api, tmp_path, capsys):
    values = ["webhook.failurePolicy=Ignore", "-f", "tests/policy/chart-values.yaml"]
    install(api, render(values))
    code, out = check(api, tmp_path, capsys)
    assert code == 1, out
    assert "‼ failurePolicy is Fail\n    every webhook: failurePolicy Ignore\n    see charts/podpatterns/README.md" in out
    guard = line(out, "mandatory rules are guarded where the webhook fails open")
    assert guard.startswith("✘") and f"{FULLNAME}-prod-logs" in guard, guard
    assert "--set policyGuard.enabled=true" in guard
    # With the guard rendered (as helm installs it), the check passes.
    with KubeApi() as guarded:
        install(guarded, render([*values, "policyGuard.enabled=true"]))
        code, out = check(guarded, tmp_path, capsys)
    assert code == 0, out
    assert "✔ mandatory rules are guarded where the webhook fails open (1 ValidatingAdmissionPolicies)" in out


def test_a_ca_bundle_that_does_not_verify_the_served_certificate_fails(api, chart, tmp_path, capsys):
    install(api, chart)
    other = serving_material()  # another CA: the caBundle of an older Secret, say
    path = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{FULLNAME}"
    configuration = api.get(path)
    for webhook in configuration["webhooks"]:
        webhook["clientConfig"]["caBundle"] = other.ca_bundle
    api.put(configuration, path)
    code, out = check(api, tmp_path, capsys)
    assert code == 1, out
    verdict = line(out, "the caBundle verifies the serving certificate")
    assert verdict.startswith("✘") and "is not signed by a CA of the caBundle" in verdict, verdict
    assert "hint: the apiserver refuses the webhook's TLS" in verdict


def test_a_serving_certificate_for_another_name_or_near_expiry(api, chart, tmp_path, capsys):
    wrong = certsecret.Target(NAMESPACE, SECRET, "somebody-else")
    material, _ = certsecret.renewal(None, wrong, certsecret.Lifetimes(), certs.now())
    install(api, chart, material=material)
    code, out = check(api, tmp_path, capsys)
    assert code == 1
    assert f"it is not valid for {SERVICE_DNS}: it names somebody-else," in line(out, "the caBundle verifies")
    with KubeApi() as expiring:
        install(expiring, chart, material=serving_material(dt.timedelta(days=3)))
        code, out = check(expiring, tmp_path, capsys)
    assert code == 0, out  # a warning
    assert line(out, "the caBundle verifies").startswith("‼ the caBundle verifies the serving certificate\n"
                                                         f"    Secret {NAMESPACE}/{SECRET}: tls.crt expires ")


def test_the_certificate_the_endpoint_serves_is_verified_with_the_ca_bundle(api, chart, tmp_path, capsys):
    # A real server with its own development CA, naming the Service: what a port-forward reaches.
    server = Server(tmp_path, "--certs-dir", str(tmp_path / "certs"), "--dns-name", SERVICE_DNS, "--quiet")
    try:
        ca = (tmp_path / "certs" / "ca.crt").read_bytes()
        material = certsecret.Material(ca, b"", (tmp_path / "certs" / "tls.crt").read_bytes(), b"")
        install(api, chart, material=material)
        code, out = check(api, tmp_path, capsys, "--webhook-url", f"https://127.0.0.1:{server.port}")
        assert code == 0, out
        assert f"✔ the webhook at https://127.0.0.1:{server.port} serves a certificate the caBundle verifies " \
               f"(for {SERVICE_DNS}, until" in out
        with KubeApi() as other:  # the caBundle of another CA
            install(other, chart)
            code, out = check(other, tmp_path, capsys, "--webhook-url", f"https://127.0.0.1:{server.port}")
        assert code == 1
        verdict = line(out, f"the webhook at https://127.0.0.1:{server.port}")
        assert verdict.startswith("✘") and f"dialling {SERVICE_DNS}, refuses it: " in verdict, verdict
    finally:
        server.stop()


def test_one_replica_is_a_warning_and_so_is_no_disruption_budget(api, tmp_path, capsys):
    install(api, render(SCENARIOS["single-replica"]), ready=1)
    code, out = check(api, tmp_path, capsys)
    assert code == 0, out  # warnings only
    assert line(out, "at least two replicas are ready") == (
        "‼ at least two replicas are ready\n    1 of 1 replicas ready\n"
        "    hint: with one ready replica a restart or a node drain stops the webhook; the chart's default is replicaCount 2")
    assert line(out, "a PodDisruptionBudget covers the replicas").startswith("‼")


def test_no_ready_replica_fails(api, chart, tmp_path, capsys):
    install(api, chart, ready=0)
    code, out = check(api, tmp_path, capsys)
    assert code == 1
    assert line(out, "at least two replicas are ready").startswith("✘ at least two replicas are ready\n"
                                                                   "    0 of 2 replicas ready")
    assert line(out, "every replica serves").startswith("✘ every replica serves the catalogue and policy on disk\n"
                                                        "    no running replica to ask")


def test_a_replica_whose_configuration_reload_failed_fails(api, chart, tmp_path, capsys):
    install(api, chart)
    broken = f"{FULLNAME}-7d9f8c6b5-1"
    api.proxy[(NAMESPACE, f"https:{broken}:8443", "metrics")] = HEALTHY_METRICS.replace(
        "podpatterns_config_last_reload_success 1.0", "podpatterns_config_last_reload_success 0.0")
    code, out = check(api, tmp_path, capsys)
    assert code == 1
    verdict = line(out, "every replica serves the catalogue and policy on disk")
    assert verdict.startswith(f"✘ every replica serves the catalogue and policy on disk\n    {broken}: "
                              "podpatterns_config_last_reload_success is 0: the catalogue or policy on disk does not load")
    assert f"{FULLNAME}-7d9f8c6b5-0" not in verdict
    # A replica the apiserver cannot reach (503 from the pod proxy) fails too, saying so.
    del api.proxy[(NAMESPACE, f"https:{broken}:8443", "metrics")]
    code, out = check(api, tmp_path, capsys)
    assert code == 1
    assert "cannot read /metrics through the pod proxy" in line(out, "every replica serves")


def test_a_namespace_naming_an_unknown_entry_fails(api, chart, tmp_path, capsys):
    install(api, chart)
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "shop", "labels": {"podpatterns.io/injection": "enabled"},
        "annotations": {"podpatterns.io/inject": "log-shiper, json-log-adapter"}}}, "/api/v1/namespaces/shop")
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "blog", "annotations": {"podpatterns.io/inject": "log-shipper"}}}, "/api/v1/namespaces/blog")
    code, out = check(api, tmp_path, capsys)
    assert code == 1
    assert line(out, "Namespace annotations name only catalogue entries") == (
        "✘ Namespace annotations name only catalogue entries\n"
        "    namespace shop: podpatterns.io/inject='log-shiper, json-log-adapter' names log-shiper, not in the catalogue\n"
        "    hint: its Pods get a warning and not the entry; known entries: db-ambassador, json-log-adapter, log-shipper "
        "(podpatterns catalog list)")
    assert line(out, "annotated Namespaces are labelled").startswith(
        "‼ annotated Namespaces are labelled for injection\n"
        "    namespace blog has podpatterns.io/inject but not the label podpatterns.io/injection=enabled")


def test_stale_pods_warn_and_pods_lacking_a_mandatory_entry_fail(api, tmp_path, capsys):
    docs = render(["-f", "tests/policy/chart-values.yaml"])
    install(api, docs)
    pod = injected(APP)
    status = json.loads(pod["metadata"]["annotations"]["podpatterns.io/status"])
    status[0]["digest"] = "sha256:0000000000000000"  # injected from an older catalogue
    pod["metadata"]["annotations"]["podpatterns.io/status"] = json.dumps(status)
    api.put(pod, "/api/v1/namespaces/shop/pods/web")
    # Created while the webhook was down, in a Namespace the mandatory rule prod-logs selects.
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"containers": [{"name": "api", "image": "nginx:1.27"}]}}
    api.put(bare, "/api/v1/namespaces/shop/pods/api")
    code, out = check(api, tmp_path, capsys)
    assert code == 1, out
    assert line(out, "no injected Pod is stale") == (
        "‼ no injected Pod is stale (1 injected)\n"
        "    1 of 1 injected Pods run entries from an older catalogue\n"
        "    shop/web (pod/web): log-shipper\n"
        "    hint: running Pods keep what they were injected with; podpatterns status --stale -A lists their workloads, "
        "podpatterns rollout restarts them")
    assert line(out, "no Pod lacks a mandatory entry").startswith(
        "✘ no Pod lacks a mandatory entry\n    1 Pod without entries a mandatory rule adds\n    shop/api (pod/api): log-shipper")
    # The webhook's own Pods (in the release namespace, which it never sees) are not counted.
    assert f"{NAMESPACE}/" not in line(out, "no Pod lacks a mandatory entry")


def test_an_unreachable_api_cannot_be_checked(tmp_path, capsys):
    with KubeApi() as gone:
        kubeconfig = gone.kubeconfig(tmp_path / "kubeconfig")
    code = cli.main(["check", "--kubeconfig", str(kubeconfig), "--release", "pp", "-n", NAMESPACE])
    out = capsys.readouterr().out
    assert code == 2
    assert out.startswith("kubernetes-api\n--------------\n✔ can initialize the client\n✘ can query the Kubernetes API\n"
                          "    cannot reach the Kubernetes API: ")
    assert "    hint: is the cluster up, and the kubeconfig's server right? (kubectl cluster-info)" in out
    assert "podpatterns-webhook" not in out  # nothing else can be checked
    no_config = cli.main(["check", "--kubeconfig", str(tmp_path / "missing"), "--release", "pp"])
    assert no_config == 2 and "✘ can initialize the client" in capsys.readouterr().out


def test_a_forbidden_read_cannot_be_checked(api, chart, tmp_path, capsys):
    install(api, chart)
    api.fault("GET", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", status=403,
              reason="Forbidden", message='mutatingwebhookconfigurations.admissionregistration.k8s.io is forbidden: User '
              '"jane" cannot list resource "mutatingwebhookconfigurations" in API group "admissionregistration.k8s.io" '
              'at the cluster scope')
    code, out = check(api, tmp_path, capsys)
    assert code == 2, out
    assert line(out, "the MutatingWebhookConfiguration exists") == (
        "✘ the MutatingWebhookConfiguration exists\n"
        "    forbidden to list mutatingwebhookconfigurations: mutatingwebhookconfigurations.admissionregistration.k8s.io "
        'is forbidden: User "jane" cannot list resource "mutatingwebhookconfigurations" in API group '
        '"admissionregistration.k8s.io" at the cluster scope\n'
        "    hint: grant the user list on mutatingwebhookconfigurations (README, podpatterns check, lists the rules it needs)")
    assert "podpatterns-replicas" in out  # the other checks went on


def test_a_broken_release_configuration_fails_its_check(api, chart, tmp_path, capsys):
    install(api, chart)
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{FULLNAME}-policy"
    policy = api.get(path)
    policy["data"]["policy.yaml"] = "apiVersion: podpatterns.io/v1alpha1\nkind: Policy\nspec:\n  rules:\n  - name: x\n    inject: [nope]\n"
    api.put(policy, path)
    code, out = check(api, tmp_path, capsys)
    assert code == 1, out
    verdict = line(out, "the release's catalogue and policy load")
    assert verdict.startswith("✘ the release's catalogue and policy load\n    the policy is broken:"), verdict
    assert "podpatterns-pods" not in out  # judged by a configuration that does not load: not judged


def test_check_is_listed_and_selftest_is_not(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listing = capsys.readouterr().out
    assert re.search(r"^\s+check\s+check an installed release", listing, re.M)
    assert "selftest" not in listing


def test_what_check_reads_is_the_rbac_the_readme_lists(api, tmp_path, capsys):
    from tests.test_chart_server import access

    install(api, render(["webhook.failurePolicy=Ignore", "-f", "tests/policy/chart-values.yaml", "policyGuard.enabled=true"]))
    pod = injected(APP)
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f",
                                           "uid": "1", "controller": True}]
    api.put(pod, "/api/v1/namespaces/shop/pods/web")
    code, out = check(api, tmp_path, capsys)
    assert code == 0, out
    reads = {(verb, group, resource.split("/")[0] + ("/proxy" if "/proxy/" in path else ""), namespace)
             for (verb, group, resource, namespace, _), path in
             ((access(r.method, r.path, r.query), r.path) for r in api.requests if access(r.method, r.path, r.query))}
    assert all(verb in ("get", "list") for verb, *_ in reads)  # check only reads
    assert reads == {
        ("list", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", ""),
        ("list", "admissionregistration.k8s.io", "validatingadmissionpolicies", ""),
        ("list", "admissionregistration.k8s.io", "validatingadmissionpolicybindings", ""),
        ("list", "apps", "deployments", NAMESPACE),
        ("get", "", "secrets", NAMESPACE),
        ("list", "policy", "poddisruptionbudgets", NAMESPACE),
        ("list", "", "pods", NAMESPACE),
        ("get", "", "pods/proxy", NAMESPACE),
        ("list", "", "configmaps", NAMESPACE),
        ("list", "", "namespaces", ""),
        ("list", "", "pods", ""),
        ("get", "apps", "replicasets", "shop"),
    }, reads
