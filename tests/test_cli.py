"""The podpatterns command line: inject, explain and certs, as a user runs them."""

from __future__ import annotations

import base64
import subprocess

import pytest
import yaml
from cryptography import x509

from tests.helpers import assert_valid_pod, podpatterns_command
from webhook.catalog import catalogue
from webhook.cli import commands as cli

POD_SPEC = {"containers": [{"name": "app", "image": "example/app:1"}]}
ANNOTATIONS = {"podpatterns.io/inject": "log-shipper"}


def template():
    return {"metadata": {"annotations": dict(ANNOTATIONS)}, "spec": dict(POD_SPEC, restartPolicy="OnFailure")}


WORKLOADS = {
    "Pod": ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": dict(ANNOTATIONS)}, "spec": POD_SPEC},
            ()),
    "Deployment": ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                    "spec": {"selector": {}, "template": template()}}, ("spec", "template")),
    "StatefulSet": ({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
                     "spec": {"selector": {}, "template": template()}}, ("spec", "template")),
    "DaemonSet": ({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
                   "spec": {"selector": {}, "template": template()}}, ("spec", "template")),
    "ReplicaSet": ({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
                    "spec": {"selector": {}, "template": template()}}, ("spec", "template")),
    "Job": ({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": template()}},
            ("spec", "template")),
    "CronJob": ({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
                 "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template()}}}},
                ("spec", "jobTemplate", "spec", "template")),
}


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*podpatterns_command(), *args], input=stdin, capture_output=True, text=True, timeout=60)


def dig(doc, path):
    for step in path:
        doc = doc[step]
    return doc


def test_inject_handles_every_workload_kind_in_one_multi_document_stdin():
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
    docs = [doc for doc, _ in WORKLOADS.values()] + [service]
    done = run("inject", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert done.returncode == 0, done.stderr
    out = list(yaml.safe_load_all(done.stdout))
    assert len(out) == len(docs)
    for (kind, (_, path)), doc in zip(WORKLOADS.items(), out):
        assert doc["kind"] == kind
        pod = dig(doc, path)
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["log-shipper"], kind
        assert_valid_pod({"metadata": {"name": "x", **pod["metadata"]}, "spec": pod["spec"]})
    assert out[-1] == service  # objects without a Pod pass through untouched


def test_inject_reads_a_file_and_denies_with_exit_1(tmp_path):
    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p", "annotations": {"podpatterns.io/inject": "db-ambassador"}}, "spec": POD_SPEC}))
    done = run("inject", "-f", str(manifest))
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Pod p in namespace default: denied: db-ambassador: required parameter upstream is missing" in done.stderr


@pytest.mark.parametrize(("text", "error"), [("a: [b", "podpatterns: invalid YAML"), (None, "No such file")])
def test_inject_reports_unreadable_input_with_exit_2(tmp_path, text, error):
    path = tmp_path / "in.yaml"
    if text is not None:
        path.write_text(text)
    done = run("inject", "-f", str(path))
    assert done.returncode == 2
    assert error in done.stderr


def test_inject_with_an_old_kube_version_uses_regular_containers_and_warns():
    done = run("inject", "-f", "-", "--kube-version", "1.28", stdin=yaml.safe_dump(WORKLOADS["Job"][0]))
    assert done.returncode == 0
    pod = yaml.safe_load(done.stdout)["spec"]["template"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["app", "log-shipper"]
    assert "initContainers" not in pod["spec"]
    assert ("warning: Job j in namespace default (pod template): log-shipper runs as a regular container: a Pod with "
            "restartPolicy OnFailure will not complete while it runs") in done.stderr


def test_explain_says_what_from_where_and_why_not(tmp_path, capsys):
    docs = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "shop", "annotations": {
            "podpatterns.io/inject": "db-ambassador, log-shipper",
            "db-ambassador.podpatterns.io/upstream": "pg.shop.svc:5432",
            "podpatterns.io/status": '[{"entry":"log-shipper","pattern":"sidecar","digest":"sha256:0"}]'}},
         "spec": POD_SPEC},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"}, "spec": POD_SPEC},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c", "annotations": {"podpatterns.io/inject": "x"}},
         "spec": POD_SPEC},
    ]
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert cli.main(["explain", "-f", str(path)]) == 0
    digest = catalogue.load()["log-shipper"].digest
    claim = (f"annotation podpatterns.io/status claims it, digest sha256:0; the catalogue's is {digest}, "
             "but the Pod has no container log-shipper; injected afresh")
    assert capsys.readouterr().out.splitlines() == [
        "Pod a in namespace shop:",
        "  db-ambassador: injected, requested by annotation podpatterns.io/inject",
        "    upstream = pg.shop.svc:5432  (annotation db-ambassador.podpatterns.io/upstream)",
        "    port = 5432  (default)",
        "    maxConnections = 100  (default)",
        "    cpuRequest = 10m  (default)",
        "    memoryRequest = 16Mi  (default)",
        "    cpuLimit = 250m  (default)",
        "    memoryLimit = 128Mi  (default)",
        # The status annotation claims log-shipper, but the Pod does not hold it: a claim, not proof.
        f"  log-shipper: injected, requested by annotation podpatterns.io/inject; {claim}",
        "    endpoint = fluentd.logging.svc:24224  (default)",
        "    logDir = /var/log/app  (default)",
        "    logVolumeSize = 256Mi  (default)",
        "    bufferMB = 256  (default)",
        "    cpuRequest = 10m  (default)",
        "    memoryRequest = 32Mi  (default)",
        "    cpuLimit = 200m  (default)",
        "    memoryLimit = 128Mi  (default)",
        f"  warning: log-shipper: {claim}",
        "Pod b in namespace default:",
        "  nothing to inject: no podpatterns.io/inject annotation on the Pod or its Namespace, and no policy rule adds one",
        "Pod c in namespace default:",
        "  denied: annotation podpatterns.io/inject: 'x' names unknown entry 'x'; known entries: "
        "db-ambassador, json-log-adapter, log-shipper",
    ]


def test_certs_generate_for_an_in_cluster_service(tmp_path):
    done = run("certs", "generate", "--service", "podpatterns", "--namespace", "infra", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "out" / "tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["podpatterns", "podpatterns.infra", "podpatterns.infra.svc", "podpatterns.infra.svc.cluster.local"]
    ca = (tmp_path / "out" / "ca.crt").read_bytes()
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    assert base64.b64decode(done.stdout.strip()) == ca
    assert (tmp_path / "out" / "tls.key").stat().st_mode & 0o077 == 0
    again = run("certs", "cabundle", "--ca", str(tmp_path / "out" / "ca.crt"))
    assert again.stdout == done.stdout


def test_inject_writes_values_shared_by_app_containers_in_full_without_yaml_aliases():
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "annotations": {"podpatterns.io/inject": "db-ambassador",
                                                       "db-ambassador.podpatterns.io/upstream": "pg:5432"}},
           "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx"}]}}
    done = run("inject", "-f", "-", stdin=yaml.safe_dump(pod))
    assert done.returncode == 0, done.stderr
    assert "&id" not in done.stdout and "*id" not in done.stdout
    a, b = yaml.safe_load(done.stdout)["spec"]["containers"][:2]
    assert a["env"] == b["env"] and {"name": "DB_HOST", "value": "127.0.0.1"} in a["env"]
