"""POST /validate: PatternTemplate CREATE, UPDATE and DELETE, as the apiserver sends them for the custom resource,
answered with the messages `podpatterns catalog validate` prints for the same file.

A running `podpatterns serve` (--catalog, --policy) answers over TLS; for the DELETEs of entries that cluster
objects serve, a second one also watches the PatternTemplates of the stand-in API (tests/kubeapi.py).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT, Server, podpatterns_command, review
from tests.kubeapi import KubeApi
from webhook.catalog import catalogue

REVIEWS = ROOT / "tests" / "fixtures" / "patterntemplate-reviews"

# A directory entry (--catalog) whose parameter the policy's prod environment sets.
METRICS_ADAPTER = """\
apiVersion: podpatterns.io/v1alpha1
kind: PatternTemplate
metadata:
  name: metrics-adapter
spec:
  pattern: adapter
  lifecycle: regular
  parameters:
  - {name: port, type: integer, default: 9102, minimum: 1024, maximum: 65535}
  containers:
  - name: metrics-adapter
    image: prom/statsd-exporter:v0.28.0
    args: ["--web.listen-address=:${params.port}"]
    securityContext:
      runAsNonRoot: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
"""
POLICY = """\
apiVersion: podpatterns.io/v1alpha1
kind: Policy
spec:
  environments:
    label: env
    parameters:
      prod:
        metrics-adapter: {port: 9200}
  rules:
  - name: prod-logs
    namespaceSelector: {matchLabels: {env: prod}}
    inject: [log-shipper, metrics-adapter]
    mandatory: true
"""


def template_review(operation: str, spec: dict[str, Any] | None = None, name: str | None = None,
                    **metadata: Any) -> dict[str, Any]:
    """The fixture of `operation` (create, update, delete), its object's spec replaced, renamed, metadata added."""
    body = json.loads((REVIEWS / f"patterntemplate-{operation}.json").read_text())
    request = body["request"]
    for obj in (request["object"], request["oldObject"]):
        if obj is not None and name:
            obj["metadata"]["name"] = name
        if obj is not None:
            obj["metadata"].update(metadata)
    if name:
        request["name"] = name
    if spec is not None:
        (request["object"] or request["oldObject"])["spec"] = spec
    return body


def trace_agent() -> dict[str, Any]:
    """The spec of the fixtures' object: valid, Pod Security restricted."""
    return copy.deepcopy(template_review("create")["request"]["object"]["spec"])


def broken(change) -> dict[str, Any]:
    spec = trace_agent()
    change(spec)
    return spec


def container(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["containers"][0]


# (case, how the spec is broken, the field path the message names)
MISTAKES = [
    ("unknown-container-field", lambda s: container(s).update(imagePullPolciy="Always"), "spec.containers[0].imagePullPolciy"),
    ("parameter-default-of-the-wrong-type", lambda s: s["parameters"][0].update(default="fast"), "spec.parameters[0]"),
    ("placeholder-of-an-unknown-parameter", lambda s: container(s)["args"].append("--debug=${params.debug}"),
     "spec.containers[0].args[2]"),
    ("container-restart-policy", lambda s: container(s).update(restartPolicy="Always"), "spec.containers[0].restartPolicy"),
    ("mount-of-no-volume", lambda s: container(s).update(volumeMounts=[{"name": "data", "mountPath": "/data"}]),
     "spec.containers[0].volumeMounts[0]"),
    ("two-schema-errors", lambda s: (container(s)["ports"][0].update(protocol=["TCP"]),
                                     container(s)["resources"].update(claims="none")), "spec.containers[0].ports[0].protocol"),
]


def catalog_validate(tmp_path: Path, name: str, spec: dict[str, Any]) -> tuple[int, str, str, Path]:
    """`podpatterns catalog validate DIR` of the object's YAML as the server renders it (so the lines agree)."""
    folder = tmp_path / f"validate-{name}-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    file = folder / f"{name}.yaml"
    file.write_text(catalogue.object_text({"apiVersion": "podpatterns.io/v1alpha1", "kind": "PatternTemplate",
                                           "metadata": {"name": name}, "spec": spec}))
    done = subprocess.run([*podpatterns_command(), "catalog", "validate", str(folder)], capture_output=True,
                          text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr, file


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("validate")
    (root / "catalog").mkdir()
    (root / "catalog" / "metrics-adapter.yaml").write_text(METRICS_ADAPTER)
    (root / "policy.yaml").write_text(POLICY)
    return root


@pytest.fixture(scope="module")
def server(setup):
    running = Server(setup, "--quiet", "--drain-seconds", "0", "--catalog", str(setup / "catalog"),
                     "--policy", str(setup / "policy.yaml"))
    yield running
    running.stop()


def validate(server: Server, body: Any) -> dict[str, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = server.client.post("/validate", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == json.loads(content)["request"]["uid"]
    return answer["response"]


# --- CREATE and UPDATE, through the running server

def test_a_valid_patterntemplate_is_allowed(server):
    response = validate(server, template_review("create"))
    assert response == {"uid": response["uid"], "allowed": True}
    assert validate(server, template_review("update"))["allowed"] is True


def test_an_entry_that_is_not_restricted_is_allowed_with_the_warnings_catalog_validate_prints(server, tmp_path):
    spec = broken(lambda s: (container(s)["securityContext"].pop("runAsNonRoot"),
                             container(s)["securityContext"].pop("seccompProfile")))
    response = validate(server, template_review("create", spec))
    assert response["allowed"] is True
    code, out, _, _ = catalog_validate(tmp_path, "trace-agent", spec)
    assert code == 0
    printed = [line.removeprefix("warning: ") for line in out.splitlines() if line.startswith("warning: ")]
    assert len(printed) == 2 and response["warnings"] == printed
    assert "trace-agent: not Pod Security 'restricted': container trace-agent: securityContext.runAsNonRoot must be true" in printed


@pytest.mark.parametrize(("case", "change", "field"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_an_invalid_patterntemplate_is_refused_with_the_messages_of_catalog_validate(server, tmp_path, case, change, field):
    spec = broken(change)
    response = validate(server, template_review("create", spec))
    assert response["allowed"] is False
    assert response["status"]["code"] == 400 and response["status"]["reason"] == "BadRequest"
    code, _, err, file = catalog_validate(tmp_path, "trace-agent", spec)
    assert code == 1
    printed = err.splitlines()[:-1]  # the last line counts the problems
    assert printed and err.splitlines()[-1] == f"{len(printed)} problem(s) in {file.parent}"
    # The same lines, the file named as the server names a cluster object; the line is the object's as rendered.
    assert response["status"]["message"].splitlines() == [line.replace(str(file), "patterntemplate/trace-agent")
                                                         for line in printed]
    first = response["status"]["message"].splitlines()[0]
    line = int(first.split(":")[1])
    assert first.startswith(f"patterntemplate/trace-agent:{line}: {field}"), first
    assert line > 4  # in the spec, after apiVersion, kind and metadata.name
    # An UPDATE to the same spec is refused alike.
    update = template_review("update")
    update["request"]["object"]["spec"] = spec
    assert validate(server, update)["status"] == response["status"]


def test_two_schema_errors_are_two_lines(server):
    spec = broken(MISTAKES[-1][1])
    message = validate(server, template_review("create", spec))["status"]["message"]
    assert [line.split(": ", 2)[1] for line in message.splitlines()] == [
        "spec.containers[0].ports[0].protocol", "spec.containers[0].resources.claims"]


def test_an_update_that_changes_nothing_the_catalogue_reads_is_never_refused(server):
    # An object stored before the check existed (or while it was off) can still be labelled, and lose finalizers.
    spec = broken(MISTAKES[3][1])
    body = template_review("update", spec, labels={"team": "observability"}, finalizers=[])
    body["request"]["oldObject"]["spec"] = copy.deepcopy(spec)
    assert validate(server, body) == {"uid": body["request"]["uid"], "allowed": True}
    body["request"]["object"]["spec"]["description"] = "changed"
    assert validate(server, body)["allowed"] is False


def test_a_patterntemplate_that_would_break_the_served_policy_is_refused(server):
    # Overriding the directory's metrics-adapter without the parameter the prod environment sets: the policy would
    # not load, so the reload would keep the last good catalogue. Refused, with the policy's own message.
    spec = catalogue.load_text(METRICS_ADAPTER, "x")[0]
    override = {"pattern": "adapter", "lifecycle": "regular",
                "containers": [{"name": "metrics-adapter", "image": "prom/statsd-exporter:v0.28.0",
                                "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]},
                                                    "seccompProfile": {"type": "RuntimeDefault"}}}]}
    response = validate(server, template_review("create", override, name=spec.name))
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    message = response["status"]["message"]
    assert message.startswith("the policy the server serves would no longer load with this change")
    assert message.splitlines()[1].endswith("policy.yaml:8: environment prod: metrics-adapter has no parameter 'port'; "
                                            "its parameters: none")
    # With the parameter kept, the same override is allowed.
    override["parameters"] = [{"name": "port", "type": "integer", "default": 9102}]
    assert validate(server, template_review("create", override, name=spec.name))["allowed"] is True


def test_deleting_an_object_that_serves_nothing_is_allowed(server):
    # The server serves metrics-adapter from its directory (no cluster object is served here): deleting the object
    # of that name, mandatory or not, takes nothing away.
    body = template_review("delete", name="metrics-adapter")
    assert validate(server, body) == {"uid": body["request"]["uid"], "allowed": True}


def test_other_kinds_subresources_and_operations_are_allowed(server):
    pod = review("pod-create-annotated")
    assert validate(server, pod) == {"uid": pod["request"]["uid"], "allowed": True}
    status = template_review("update", broken(MISTAKES[3][1]))
    status["request"]["subResource"] = "status"
    assert validate(server, status)["allowed"] is True
    connect = template_review("create", broken(MISTAKES[3][1]))
    connect["request"]["operation"] = "CONNECT"
    assert validate(server, connect)["allowed"] is True


@pytest.mark.parametrize(("body", "error"), [
    (b"{not json", "body is not valid JSON"),
    (b"[]", "body must be a JSON object (an AdmissionReview), got a JSON list"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "u"}}).encode(),
     "body must be an AdmissionReview with apiVersion admission.k8s.io/v1"),
    (json.dumps({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}).encode(),
     "AdmissionReview request has no uid"),
])
def test_a_malformed_body_is_a_400_as_for_mutate(server, body, error):
    for path in ("/validate", "/mutate"):
        reply = server.client.post(path, content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 400
        assert reply.json()["code"] == 400 and reply.json()["error"].startswith(error), reply.text


# --- DELETE of entries cluster objects serve: `serve --watch-patterntemplates` against the stand-in API

# Mandatory: log-shipper (a built-in underneath), metrics-adapter (the directory's underneath), trace-agent (only the
# cluster object). span-exporter is only named by an environment; spare by nothing.
CLUSTER_POLICY = POLICY.replace("        metrics-adapter: {port: 9200}\n", "        metrics-adapter: {port: 9200}\n"
                                "        span-exporter: {port: 4318}\n") + """\
  - name: traced
    podSelector: {matchLabels: {traced: "yes"}}
    inject: [trace-agent]
    mandatory: true
"""


def cluster_object(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "podpatterns.io/v1alpha1", "kind": "PatternTemplate", "metadata": {"name": name}, "spec": spec}


def cluster_specs() -> dict[str, dict[str, Any]]:
    adapter = yaml.safe_load(METRICS_ADAPTER)["spec"]
    adapter["description"] = "the cluster's copy"
    renamed = {name: broken(lambda s, n=name: container(s).update(name=n)) for name in ("span-exporter", "spare")}
    return {"trace-agent": trace_agent(), "metrics-adapter": adapter, **renamed,
            "log-shipper": yaml.safe_load((ROOT / "webhook/catalog/builtin/log-shipper.yaml").read_text())["spec"]}


@pytest.fixture(scope="module")
def cluster(setup):
    """A server serving cluster objects over the directory and the built-ins (their origins say so), and the API."""
    (setup / "cluster-policy.yaml").write_text(CLUSTER_POLICY)
    with KubeApi() as api:
        for name, spec in cluster_specs().items():
            api.put(cluster_object(name, spec), f"/apis/podpatterns.io/v1alpha1/patterntemplates/{name}")
        running = Server(setup, "--quiet", "--drain-seconds", "0", "--watch-patterntemplates",
                         "--catalog", str(setup / "catalog"), "--policy", str(setup / "cluster-policy.yaml"),
                         env={**os.environ, "KUBECONFIG": str(api.kubeconfig(setup / "kubeconfig"))})
        try:
            deadline = time.monotonic() + 30
            while running.client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, running.output()
                time.sleep(0.1)
            yield running
        finally:
            running.stop()
    served = [json.loads(line) for line in running.output().splitlines() if line.startswith("{")]
    assert any(e["message"] == "configuration reloaded" and e.get("patterntemplates") == 5 for e in served)


def delete(server: Server, name: str) -> dict[str, Any]:
    return validate(server, template_review("delete", cluster_specs()[name], name=name))


def test_deleting_an_entry_a_mandatory_rule_needs_is_refused_naming_the_rule(cluster, setup):
    response = delete(cluster, "trace-agent")
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 403, "reason": "Forbidden",
        "message": f"trace-agent is mandatory by policy rule traced ({setup / 'cluster-policy.yaml'}), and no built-in "
                   "or --catalog entry trace-agent would remain to serve it; take trace-agent out of the rule's inject first"}


def test_deleting_an_entry_no_rule_needs_is_allowed(cluster):
    assert delete(cluster, "spare")["allowed"] is True


@pytest.mark.parametrize("name", ["log-shipper", "metrics-adapter"])
def test_deleting_a_mandatory_entry_is_allowed_when_a_built_in_or_directory_entry_remains(cluster, name):
    assert delete(cluster, name)["allowed"] is True


def test_deleting_an_entry_the_policy_names_otherwise_is_refused_with_the_policys_message(cluster, setup):
    # Not mandatory, but the prod environment sets its parameter: without it the policy would not load.
    response = delete(cluster, "span-exporter")
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert response["status"]["message"].splitlines()[1] == (
        f"{setup / 'cluster-policy.yaml'}:9: environment prod: no catalogue entry 'span-exporter'; known entries: "
        "db-ambassador, json-log-adapter, log-shipper, metrics-adapter, spare, trace-agent")
