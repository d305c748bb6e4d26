"""Catalogue entries: loading, validation errors with file and line, overrides, the built-ins' security."""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.helpers import (
    Server,
    apply,
    assert_valid_pod,
    ops_of,
    podpatterns_command,
    review_with,
)
from webhook.catalog import catalogue
from webhook.catalog.restricted import container_violations, volume_violations
from webhook.cli import commands as cli

GOOD = """\
apiVersion: podpatterns.io/v1alpha1
kind: PatternTemplate
metadata:
  name: metrics-adapter
spec:
  pattern: adapter
  description: Exposes the app's stats as Prometheus metrics.
  lifecycle: regular
  parameters:
  - {name: port, type: integer, default: 9102, minimum: 1024, maximum: 65535}
  - {name: verbose, type: boolean, default: false}
  containers:
  - name: metrics-adapter
    image: prom/statsd-exporter:v0.28.0
    args: ["--web.listen-address=:${params.port}", "--log.level=${params.verbose}"]
    ports: [{containerPort: "${params.port}", name: metrics}]
    readinessProbe:
      httpGet: {path: /metrics, port: "${params.port}"}
    securityContext:
      runAsNonRoot: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
"""

# (what is broken, the file text, the line and message expected)
BROKEN = [
    ("bad-yaml", "spec: [unclosed\n", 2, "invalid YAML"),
    ("unknown-field", GOOD.replace("  pattern: adapter\n", "  pattern: adapter\n  sidecarz: true\n"), 7,
     "unknown field spec.sidecarz; allowed: annotations, appContainers, containers, description, imagePullSecrets, lifecycle, parameters, pattern, volumes"),
    ("unknown-placeholder", GOOD.replace("${params.verbose}", "${params.verbos}"), 15,
     "unknown placeholder ${params.verbos}; known: params.port, params.verbose, pod.name, pod.namespace, pod.serviceAccountName"),
    ("schema", GOOD.replace("name: metrics}", "name: metrics, protocol: [TCP]}"), 16,
     "spec.containers[0].ports[0].protocol: ['TCP'] is not of type 'string', 'null'"),
    ("unknown-container-field", GOOD.replace("    image: prom", "    imagePullPolicyy: Always\n    image: prom"), 14,
     "spec.containers[0].imagePullPolicyy: Additional properties are not allowed ('imagePullPolicyy' was unexpected)"),
    ("string-in-integer-field", GOOD.replace("containerPort: \"${params.port}\"", "containerPort: \"${pod.name}\""), 16,
     "this field takes an integer: it must be a lone placeholder of an integer parameter, not '${pod.name}'"),
    ("duplicate-key", GOOD.replace("  lifecycle: regular\n", "  lifecycle: regular\n  lifecycle: native\n"), 9,
     "duplicate key 'lifecycle'"),
    ("bad-parameter", GOOD.replace("type: boolean, default: false", "type: bool"), 11,
     "parameter verbose: type 'bool' is not one of string, integer, boolean, path, hostPort, quantity"),
    ("bad-default", GOOD.replace("default: 9102", "default: 80"), 10,
     "parameter port: default/enum value 80: expected an integer from 1024 to 65535"),
    ("missing-volume", GOOD.replace("    readinessProbe:", "    volumeMounts: [{name: data, mountPath: /d}]\n    readinessProbe:"), 17,
     "volumeMount 'data' names no volume of this entry (declared: none)"),
    ("wrong-kind", GOOD.replace("kind: PatternTemplate", "kind: Template"), 2,
     "expected apiVersion: podpatterns.io/v1alpha1 and kind: PatternTemplate"),
    ("restart-policy", GOOD.replace("    image: prom", "    restartPolicy: Always\n    image: prom"), 14,
     "set spec.lifecycle instead of a container restartPolicy"),
    ("free-string-in-annotation", GOOD.replace("  containers:\n", "  annotations:\n    metrics-adapter.config.example.com/conf: |\n"
     "      level: ${params.name}\n  containers:\n").replace("  - {name: verbose", "  - {name: name, type: string, default: x}\n  - {name: verbose"),
     14, "${params.name} in an annotation needs a parameter with an enum or a pattern"),
    ("contract-annotation", GOOD.replace("  containers:\n", "  annotations:\n    podpatterns.io/status: '[]'\n  containers:\n"),
     13, "annotation key 'podpatterns.io/status' is the user contract's"),
    ("bad-annotation-key", GOOD.replace("  containers:\n", "  annotations:\n    no-prefix: x\n  containers:\n"),
     13, "annotation key 'no-prefix' must be prefix/name"),
    ("render-as-not-enum", GOOD.replace("type: boolean, default: false", "type: string, default: a, renderAs: {a: b}"), 11,
     "parameter verbose: renderAs applies to a string enum"),
    ("not-under-on-string", GOOD.replace("type: boolean, default: false", "type: string, default: a, notUnder: [/x]"), 11,
     "parameter verbose: notUnder applies to a path"),
    ("optional-without-default", GOOD.replace("type: boolean, default: false", "type: boolean"), 15,
     "${params.verbose}: parameter verbose is optional without a default; give it a default or make it required"),
]


def write(tmp_path, text, name="entry.yaml"):
    folder = tmp_path / "catalog"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    return folder


def test_a_good_entry_loads_with_typed_placeholders(tmp_path):
    entries = catalogue.load_directory(write(tmp_path, GOOD))
    entry = entries["metrics-adapter"]
    assert entry.parameters["port"].default == 9102
    assert entry.warnings == ()
    assert entry.containers[0]["ports"][0]["containerPort"].typed is True  # an integer field keeps the type
    assert entry.containers[0]["args"][1].typed is False


@pytest.mark.parametrize(("case", "text", "line", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_catalog_validate_names_file_line_and_problem(tmp_path, capsys, case, text, line, message):
    folder = write(tmp_path, text)
    assert cli.main(["catalog", "validate", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'entry.yaml'}:{line}: " in err, err
    assert message in err, err


def test_two_files_defining_one_entry_are_refused(tmp_path):
    folder = write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(catalogue.CatalogueError, match=r"b.yaml:1: entry metrics-adapter is also defined at .*a.yaml:1"):
        catalogue.load_directory(folder)


def test_catalog_validate_accepts_a_good_directory_and_lists_warnings(tmp_path, capsys):
    folder = write(tmp_path, GOOD.replace("      runAsNonRoot: true\n", ""))
    assert cli.main(["catalog", "validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"ok: metrics-adapter (adapter) at {folder / 'entry.yaml'}:1" in out
    assert "warning: metrics-adapter: not Pod Security 'restricted': container metrics-adapter: " \
           "securityContext.runAsNonRoot must be true" in out


def test_catalog_list_shows_builtins_and_parameters(capsys):
    assert cli.main(["catalog", "list"]) == 0
    out = capsys.readouterr().out
    for line in ("db-ambassador  (ambassador, lifecycle auto",
                 "    upstream: hostPort, required: host:port of the database",
                 "    port: integer, default 5432: local port the proxy listens on (127.0.0.1 only)",
                 "json-log-adapter  (adapter", "log-shipper  (sidecar"):
        assert line in out


def test_builtins_are_pod_security_restricted_with_pinned_images_and_resources():
    for entry in catalogue.builtin_entries().values():
        assert entry.warnings == ()
        for container in entry.containers:
            assert container_violations(container) == []
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
            # cpu and memory requested and limited; disk (the backlog, a log of its own) requested, not limited:
            # at an ephemeral-storage limit the kubelet would evict the whole Pod.
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}
            assert set(container["resources"]["requests"]) == {"cpu", "memory", "ephemeral-storage"}
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
        for volume in entry.volumes:
            assert volume_violations(volume) == []


def test_the_restricted_checker_catches_each_rule():
    bad = {"name": "x", "ports": [{"containerPort": 80, "hostPort": 80}],
           "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}, "runAsUser": 0}}
    assert len(container_violations(bad)) == 8
    assert volume_violations({"name": "h", "hostPath": {"path": "/"}}) == ["volume h: type hostPath is not allowed"]


def test_serve_refuses_to_start_on_a_broken_catalogue_naming_the_file(tmp_path):
    folder = write(tmp_path, BROKEN[2][1])
    done = subprocess.run([*podpatterns_command(), "serve", "--catalog", str(folder), "--port", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to start, the catalogue is broken" in done.stderr
    assert f"{folder / 'entry.yaml'}:15: spec.containers[0].args[1]: unknown placeholder" in done.stderr


def test_serve_with_a_catalogue_directory_adds_and_overrides_entries(tmp_path):
    override = textwrap.dedent("""\
        apiVersion: podpatterns.io/v1alpha1
        kind: PatternTemplate
        metadata: {name: log-shipper}
        spec:
          pattern: sidecar
          lifecycle: regular
          containers:
          - name: shipper
            image: example/shipper:2.0
        """)
    folder = write(tmp_path, GOOD)
    (folder / "override.yml").write_text(override)
    server = Server(tmp_path, "--catalog", str(folder), "--quiet")
    try:
        body = review_with({"podpatterns.io/inject": "log-shipper, metrics-adapter",
                            "metrics-adapter.podpatterns.io/port": "9200",
                            "metrics-adapter.podpatterns.io/verbose": "true"})
        response = server.mutate(body).json()["response"]
        patched = apply(body["request"]["object"], ops_of(response))
        assert_valid_pod(patched)
        added = patched["spec"]["containers"][1:]
        assert [c["name"] for c in added] == ["shipper", "metrics-adapter"]
        metrics = added[1]
        assert metrics["ports"] == [{"containerPort": 9200, "name": "metrics"}]
        assert metrics["readinessProbe"]["httpGet"]["port"] == 9200
        assert metrics["args"] == ["--web.listen-address=:9200", "--log.level=true"]
    finally:
        server.stop()


def pod_for(entry: str, annotations: dict[str, str] | None = None, namespace: str = "default") -> dict:
    return {"metadata": {"name": "p", "namespace": namespace,
                         "annotations": {"podpatterns.io/inject": entry, **(annotations or {})}},
            "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}


def injected_container(entries: catalogue.Catalogue, pod: dict, settings=None) -> dict:
    from webhook.core import engine

    plan = engine.plan(pod, entries, settings or engine.Settings())
    assert plan.denial is None, plan.denial
    # The Pod has no init containers: a native sidecar comes as the new list, a regular one is appended.
    value = next(op["value"] for op in plan.ops if op["path"] in ("/spec/initContainers", "/spec/containers/-"))
    return value[0] if isinstance(value, list) else value


def test_renders_are_kept_per_parameter_values_and_bounded():
    from webhook.core import engine, renders

    entries = catalogue.load()
    log_shipper = entries["log-shipper"]
    assert log_shipper.renders.references == ("params.bufferMB", "params.cpuLimit", "params.cpuRequest", "params.endpoint",
                                              "params.logDir", "params.logVolumeSize", "params.memoryLimit",
                                              "params.memoryRequest")
    first = injected_container(entries, pod_for("log-shipper"))
    assert injected_container(entries, pod_for("log-shipper")) is first  # the same values: one render
    other = injected_container(entries, pod_for("log-shipper", {"log-shipper.podpatterns.io/logDir": "/logs"}))
    assert other is not first and "path=/logs/*.log,/logs/*.log.1" in other["args"]  # other values: their own render
    # It reads its namespace from the downward API at run time, so the namespace is not part of the key.
    assert injected_container(entries, pod_for("log-shipper", namespace="other")) is first
    # An entry without ${pod.name} shares its render between Pods of different names.
    renamed = pod_for("log-shipper")
    renamed["metadata"]["name"] = "q"
    assert injected_container(entries, renamed) is first
    # The lifecycle decided for the cluster is part of the key.
    regular = injected_container(entries, pod_for("log-shipper"), engine.Settings(native_sidecars=False))
    assert "restartPolicy" not in regular and first["restartPolicy"] == "Always"
    for i in range(renders.MAX_RENDERS + 10):
        injected_container(entries, pod_for("log-shipper", {"log-shipper.podpatterns.io/logDir": f"/logs/{i}"}))
    assert len(log_shipper.renders) == renders.MAX_RENDERS
    assert injected_container(entries, pod_for("log-shipper")) is not first  # the oldest went first


def test_a_reloaded_catalogue_renders_afresh(tmp_path):
    folder = write(tmp_path, GOOD)
    before = catalogue.load([folder])
    assert injected_container(before, pod_for("metrics-adapter"))["image"] == "prom/statsd-exporter:v0.28.0"
    write(tmp_path, GOOD.replace("v0.28.0", "v0.29.0"))
    after = catalogue.load([folder])
    assert after["metrics-adapter"].renders is not before["metrics-adapter"].renders
    assert len(after["metrics-adapter"].renders) == 0
    assert injected_container(after, pod_for("metrics-adapter"))["image"] == "prom/statsd-exporter:v0.29.0"
