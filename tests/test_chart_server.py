"""The chart's Deployment, run for real: the image's ENTRYPOINT plus the chart's container args, its
mounted ConfigMaps and Secret, against a stand-in Kubernetes API holding what the chart rendered.

Proves the chart and the server agree (flags, paths, settings, policy), and that the server uses the
API exactly within the RBAC the chart grants it.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import (
    ROOT,
    apply,
    assert_valid_pod,
    free_port,
    ops_of,
    podpatterns_command,
    review,
)
from tests.kubeapi import KubeApi
from tests.test_chart import FULLNAME, NAMESPACE, SCENARIOS, find, render

MOUNTS = ("/etc/podpatterns/settings", "/etc/podpatterns/catalogue", "/etc/podpatterns/policy", "/etc/podpatterns/tls")
SERVICE_NAME = f"{FULLNAME}.{NAMESPACE}.svc"


def entrypoint() -> list[str]:
    line = next(l for l in (ROOT / "Dockerfile").read_text().splitlines() if l.startswith("ENTRYPOINT"))
    return json.loads(line.removeprefix("ENTRYPOINT").strip())


class Deployment:
    """The rendered Deployment's container started as a process, its volumes as temporary directories."""

    def __init__(self, docs: list[dict[str, Any]], workdir: Path, api: KubeApi, secret_files: dict[str, bytes] | None = None):
        self.port = free_port()
        container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        volumes = {v["name"]: v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        paths = {"/tmp/podpatterns/certs": str(workdir / "certs")}
        for mount in container["volumeMounts"]:
            local = workdir / mount["name"]
            local.mkdir()
            source = volumes[mount["name"]]
            if "configMap" in source:
                for key, text in (find(docs, "ConfigMap", source["configMap"]["name"]).get("data") or {}).items():
                    (local / key).write_text(text)
            if "secret" in source:
                for key, data in (secret_files or {}).items():
                    (local / key).write_bytes(data)
            paths[mount["mountPath"]] = str(local)
        # The image's ENTRYPOINT is `podpatterns serve …`: its first word is the command started below.
        args = [*entrypoint()[1:], *container["args"], f"--port={self.port}", "--host=127.0.0.1"]
        self.args = [_remapped(arg, paths) for arg in args]
        env = {"KUBECONFIG": str(api.kubeconfig(workdir / "kubeconfig")), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        self.log = workdir / "server.log"
        self.process = subprocess.Popen([*podpatterns_command(), *self.args], cwd=workdir, env=env,
                                        stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def wait_ready(self, ca_pem: bytes) -> ServiceClient:
        client = ServiceClient(self.port, ca_pem)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if client.get("/readyz").status_code == 200:
                    return client
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready in 60 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


class ServiceClient:
    """Talks to 127.0.0.1 while TLS verifies the Service's DNS name, as the apiserver does."""

    def __init__(self, port: int, ca_pem: bytes):
        self.http = httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=10,
                                 verify=ssl.create_default_context(cadata=ca_pem.decode()))

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path, extensions={"sni_hostname": SERVICE_NAME})

    def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.post("/mutate", content=json.dumps(body), extensions={"sni_hostname": SERVICE_NAME})
        assert reply.status_code == 200, reply.text
        return reply.json()["response"]

    def close(self) -> None:
        self.http.close()


def _remapped(arg: str, paths: dict[str, str]) -> str:
    """An argument with a path inside the container replaced by the local directory mounted there."""
    flag, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    for image_path in sorted(paths, key=len, reverse=True):
        if value == image_path or value.startswith(image_path + "/"):
            return f"{flag}{equals}{paths[image_path]}{value[len(image_path):]}"
    return arg


def seed(api: KubeApi, docs: list[dict[str, Any]]) -> None:
    """What `helm install` created that the server reads, plus the cluster's Namespaces."""
    configuration = find(docs, "MutatingWebhookConfiguration")
    api.put(configuration, f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{FULLNAME}")
    for name, labels in ((NAMESPACE, {}), ("shop", {"env": "prod"}), ("elsewhere", {}), ("kube-system", {})):
        api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
                f"/api/v1/namespaces/{name}")


TEMPLATES = "/apis/podpatterns.io/v1alpha1/patterntemplates"
TRACER = {"apiVersion": "podpatterns.io/v1alpha1", "kind": "PatternTemplate", "metadata": {"name": "tracer"},
          "spec": {"pattern": "sidecar", "containers": [{"name": "tracer", "image": "registry.example/tracer:1.0"}]}}


def pod_review(namespace: str) -> dict[str, Any]:
    body = review("pod-create-annotated")
    body["request"]["namespace"] = namespace
    pod = body["request"]["object"]
    pod["metadata"]["namespace"] = namespace
    pod["metadata"]["annotations"] = {}
    return body


# --- RBAC as the apiserver would check it

def access(method: str, path: str, query: dict[str, list[str]]) -> tuple[str, str, str, str, str] | None:
    """(verb, apiGroup, resource, namespace, name) of a request; None for non-resource URLs (/version)."""
    match = re.match(r"^/(?:api/v1|apis/([^/]+)/[^/]+)/(.*)$", path)
    if not match:
        return None
    group, rest = match.group(1) or "", match.group(2).strip("/").split("/")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:  # a subresource: RBAC names it resource/subresource (patterntemplates/status)
        resource = f"{resource}/{rest[2]}"
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "watch" if query.get("watch", ["false"])[0] in ("true", "1") else "get" if name else "list"
    return verb, group, resource, namespace, name


def allowed(rules: list[tuple[str, dict[str, Any]]], request: tuple[str, str, str, str, str]) -> bool:
    verb, group, resource, namespace, name = request
    for scope, rule in rules:
        if scope and scope != namespace:
            continue
        if (group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
                and (not rule.get("resourceNames") or name in rule["resourceNames"])):
            return True
    return False


def granted(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    rules = [("", rule) for d in docs if d["kind"] == "ClusterRole" for rule in d["rules"]]
    return rules + [(d["metadata"]["namespace"], rule) for d in docs if d["kind"] == "Role" for rule in d["rules"]]


def assert_within_rbac(api: KubeApi, docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    rules = granted(docs)
    used = set()
    for request in list(api.requests):
        checked = access(request.method, request.path, request.query)
        if checked is None:
            continue
        assert allowed(rules, checked), f"{request.method} {request.path} is not granted by the chart's RBAC"
        used.add(checked[:3])
    return used


@pytest.mark.slow
def test_the_default_install_runs_self_managed_and_enforces_the_chart_policy(tmp_path):
    docs = render(SCENARIOS["policy-guard"])
    with KubeApi() as api:
        seed(api, docs)
        # The Namespace watch is held back: a Namespace created after the list is read with a get.
        api.fault("GET", "/api/v1/namespaces", watch=True, hold=True)
        deployment = Deployment(docs, tmp_path, api)
        try:
            secret_path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}-tls"
            deadline = time.monotonic() + 60
            while api.get(secret_path) is None and time.monotonic() < deadline:
                assert deployment.process.poll() is None, deployment.log.read_text()
                time.sleep(0.2)
            secret = api.get(secret_path)
            assert secret is not None, deployment.log.read_text()
            ca = base64.b64decode(secret["data"]["ca.crt"])
            client = deployment.wait_ready(ca)
            webhook = api.get(f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{FULLNAME}")["webhooks"][0]
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca
            # A PatternTemplate applied in the cluster is served, and its status written (patterntemplates/status).
            api.put(TRACER, f"{TEMPLATES}/tracer")
            deadline = time.monotonic() + 15
            while not (api.get(f"{TEMPLATES}/tracer") or {}).get("status") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert api.get(f"{TEMPLATES}/tracer")["status"]["conditions"][0]["reason"] == "Served"

            # The chart's policy: prod-logs makes log-shipper mandatory in namespaces labelled env=prod.
            body = pod_review("shop")
            response = client.mutate(body)
            pod = apply(body["request"]["object"], ops_of(response))
            assert_valid_pod(pod)
            assert '"entry":"log-shipper"' in pod["metadata"]["annotations"]["podpatterns.io/status"]
            plain = client.mutate(pod_review("elsewhere"))
            assert plain["allowed"] is True and "patch" not in plain
            api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {"env": "prod"}}},
                    "/api/v1/namespaces/fresh")
            body = pod_review("fresh")
            pod = apply(body["request"]["object"], ops_of(client.mutate(body)))
            assert '"entry":"log-shipper"' in pod["metadata"]["annotations"]["podpatterns.io/status"]
            client.close()
        finally:
            deployment.stop()
        used = assert_within_rbac(api, docs)
    # Least privilege both ways: everything granted was needed.
    assert used >= {("create", "", "secrets"), ("get", "admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
                    ("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
                    ("get", "", "namespaces"), ("list", "", "namespaces"), ("watch", "", "namespaces"),
                    ("list", "podpatterns.io", "patterntemplates"), ("watch", "podpatterns.io", "patterntemplates"),
                    ("patch", "podpatterns.io", "patterntemplates/status")}


@pytest.mark.slow
def test_existing_secret_mode_serves_the_mounted_certificate(tmp_path):
    out = tmp_path / "given"
    made = subprocess.run([*podpatterns_command(), "certs", "generate", "--service", FULLNAME, "--namespace", NAMESPACE,
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    ca = (out / "ca.crt").read_bytes()
    health_port = free_port()
    docs = render(["certificates.mode=existingSecret", "certificates.existingSecret.name=given",
                   f"certificates.existingSecret.caBundle={base64.b64encode(ca).decode()}",
                   f"settings.health-port={health_port}"])
    pod_spec = find(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    with KubeApi() as api:
        seed(api, docs)
        secret = {"tls.crt": (out / "tls.crt").read_bytes(), "tls.key": (out / "tls.key").read_bytes()}
        (tmp_path / "run").mkdir()
        deployment = Deployment(docs, tmp_path / "run", api, secret)
        try:
            client = deployment.wait_ready(ca)
            assert client.get("/healthz").json() == {"status": "ok"}
            client.close()
            # The kubelet's probes, as rendered: plain HTTP on the named health port.
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = container[probe]["httpGet"]
                assert get["scheme"] == "HTTP" and ports[get["port"]] == health_port
                assert httpx.get(f"http://127.0.0.1:{health_port}{get['path']}", timeout=5).status_code == 200
            # Stopping the Pod: SIGTERM, then exit 0 within the rendered grace period.
            stopping = time.monotonic()
            deployment.process.send_signal(signal.SIGTERM)
            assert deployment.process.wait(pod_spec["terminationGracePeriodSeconds"]) == 0
            assert time.monotonic() - stopping < pod_spec["terminationGracePeriodSeconds"]
        finally:
            deployment.stop()
        used = assert_within_rbac(api, docs)
    assert used == {("list", "", "namespaces"), ("watch", "", "namespaces"),
                    ("list", "podpatterns.io", "patterntemplates"), ("watch", "podpatterns.io", "patterntemplates")}
