"""The Fluent Bit pipelines of log-shipper and json-log-adapter, as Fluent Bit itself reads them, without Fluent Bit.

Each test injects a manifest with `podpatterns inject` (the CLI entry point), takes the injected container,
expands it as the kubelet does (tests/kubelet.py: `$(VAR)` from env, env from the downward API), and reads
its command line the way Fluent Bit 3.2's does (src/fluent-bit.c): -i/-F/-o/-C open a section whose
plugin name is the argument (`forward://host:port` sets host and port too); -p key=value sets a property
of the last section (an argument without "=", the empty one included, is ignored); -t sets its tag; -m its
match, for a filter or an output only; -b, -f, -l, -R, -c, -q, -v are service flags. A -c file is read
from where the container gets it (a downwardAPI volume of an annotation) and merged: its `service`,
`pipeline` (inputs, filters, outputs) and `parsers`. Values then get Fluent Bit's own `${VAR}` expansion
from the container's environment. bench/fluentbit.py runs the same Pods with a real Fluent Bit.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubelet import container_env, expand, field_value
from webhook.cli.commands import main as podpatterns

IMAGE = "cr.fluentbit.io/fluent/fluent-bit:3.2.10"
SHIPPER_STATE = "/var/lib/podpatterns/log-shipper"
ADAPTER_STATE = "/var/lib/podpatterns/json-log-adapter"

# getopt_long(argc, argv, "b:c:dDf:C:i:m:o:R:F:p:e:t:T:l:vw:qVhJL:HP:s:SWYZ", ...) in Fluent Bit 3.2.
WITH_ARGUMENT = set("bcfCimoRFpetTlwLPs")
WITHOUT_ARGUMENT = set("dDvqVhJHSWYZ")
LONG = {"storage_path": "b", "config": "c", "daemon": "d", "dry-run": "D", "flush": "f", "http": "H",
        "log_file": "l", "port": "P", "custom": "C", "input": "i", "match": "m", "output": "o", "filter": "F",
        "parser": "R", "prop": "p", "plugin": "e", "tag": "t", "sp-task": "T", "version": "V", "verbose": "v",
        "workdir": "w", "quiet": "q", "help": "h", "help-json": "J", "coro_stack_size": "s", "sosreport": "S",
        "http_server": "H", "http_listen": "L", "http_port": "P", "enable-hot-reload": "Y",
        "enable-chunk-trace": "Z", "disable-thread-safety-on-hot-reload": "W"}
SERVICE_FLAGS = {"b": "storage.path", "f": "flush", "l": "log_file", "R": "parsers_file", "w": "workdir",
                 "L": "http_listen", "P": "http_port", "s": "coro_stack_size"}
SECTIONS = {"i": "input", "F": "filter", "o": "output", "C": "custom"}


# -- reading a Fluent Bit configuration -----------------------------------------------------------------

@dataclass
class Section:
    kind: str
    props: list[tuple[str, str]] = field(default_factory=list)  # (lower-cased key, value), in order

    @property
    def name(self) -> str:
        return self.get("name") or ""

    def get(self, key: str) -> str | None:
        """A property's value: the last one set wins, as for any single-valued property."""
        values = self.all(key)
        return values[-1] if values else None

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.props if k == key.lower()]

    def set(self, key: str, value: str) -> None:
        self.props.append((key.lower(), value))


@dataclass
class FluentBit:
    service: Section = field(default_factory=lambda: Section("service"))
    sections: list[Section] = field(default_factory=list)
    parsers: dict[str, Section] = field(default_factory=dict)
    quiet: bool = False
    verbose: int = 0
    config_file: str | None = None

    def of(self, kind: str, name: str | None = None) -> list[Section]:
        return [s for s in self.sections if s.kind == kind and (name is None or s.name == name)]

    def one(self, kind: str, name: str) -> Section:
        found = self.of(kind, name)
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)} in {self.sections}"
        return found[0]


def read_command_line(argv: list[str]) -> FluentBit:
    """Fluent Bit's own reading of its arguments (getopt_long, then the switch in main())."""
    config = FluentBit()
    last: Section | None = None
    args = iter(argv)
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            assert name in LONG, f"Fluent Bit has no option --{name}"
            opt = LONG[name]
            if opt in WITH_ARGUMENT and not eq:
                value = next(args)
        elif arg.startswith("-") and len(arg) > 1:
            opt, value = arg[1], arg[2:]
            assert opt in WITH_ARGUMENT | WITHOUT_ARGUMENT, f"Fluent Bit has no option -{opt} ({arg!r})"
            if opt in WITH_ARGUMENT and not value:
                value = next(args)
            assert opt in WITH_ARGUMENT or not value, f"-{opt} takes no argument ({arg!r})"
        else:
            raise AssertionError(f"{arg!r} is not an option: Fluent Bit would ignore it (a missing -p?)")
        if opt in SECTIONS:
            last = Section(SECTIONS[opt])
            plugin, _, address = value.partition("://")
            last.set("name", plugin)
            if address:  # flb_output_new(): forward://host:port
                host, _, port = address.partition(":")
                last.set("host", host)
                if port:
                    last.set("port", port)
            config.sections.append(last)
        elif opt == "p":
            assert last is not None, "-p before any -i/-F/-o: Fluent Bit reads an unset section pointer"
            key, eq, value = value.partition("=")
            if eq:  # set_property(): no "=" (an empty argument included) sets nothing
                last.set(key, value)
        elif opt == "t":
            if last is not None:
                last.set("tag", value)
        elif opt == "m":
            if last is not None and last.kind in ("filter", "output"):
                last.set("match", value)
        elif opt in SERVICE_FLAGS:
            config.service.set(SERVICE_FLAGS[opt], value)
        elif opt == "c":
            config.config_file = value
        elif opt == "q":
            config.quiet = True
        elif opt == "v":
            config.verbose += 1
    return config


def _scalar(value: Any) -> str:
    assert isinstance(value, str), f"not a scalar: {value!r}"
    return value


def _section(kind: str, mapping: dict[str, Any]) -> Section:
    section = Section(kind)
    for key, value in mapping.items():
        for one in value if isinstance(value, list) else [value]:
            section.set(str(key), _scalar(one))
    return section


def read_yaml_config(text: str, config: FluentBit) -> None:
    """Fluent Bit's YAML configuration format: service, pipeline.{inputs,filters,outputs}, parsers."""
    doc = yaml.load(text, Loader=yaml.BaseLoader)  # scalars stay text, as libyaml gives them to Fluent Bit
    assert isinstance(doc, dict), "the configuration file is not a YAML mapping"
    unknown = set(doc) - {"service", "pipeline", "parsers", "multiline_parsers", "env", "includes", "plugins"}
    assert not unknown, f"Fluent Bit's YAML format has no section {unknown}"
    for key, value in (doc.get("service") or {}).items():
        config.service.set(str(key), _scalar(value))
    pipeline = doc.get("pipeline") or {}
    assert set(pipeline) <= {"inputs", "filters", "outputs"}, f"unknown pipeline keys {set(pipeline)}"
    for plural, kind in (("inputs", "input"), ("filters", "filter"), ("outputs", "output")):
        for item in pipeline.get(plural) or []:
            config.sections.append(_section(kind, item))
    for item in doc.get("parsers") or []:
        parser = _section("parser", item)
        config.parsers[parser.name] = parser


def fluent_bit_of(pod: dict[str, Any], name: str) -> tuple[FluentBit, dict[str, str]]:
    """The configuration the container's Fluent Bit runs with, every value expanded; and its environment."""
    container = find(pod, name)
    assert container["image"] == IMAGE
    env = container_env(pod, container)
    argv = [expand(str(a), env) for a in [*container["command"], *(container.get("args") or [])]]
    assert argv[0] == "/fluent-bit/bin/fluent-bit"
    config = read_command_line(argv[1:])
    if config.config_file:
        read_yaml_config(file_in_container(pod, container, config.config_file), config)

    def fluent_bit_env(text: str) -> str:  # flb_env_var_translate(): ${VAR} from the process environment
        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), text)
    for section in [config.service, *config.sections]:
        section.props = [(k, fluent_bit_env(v)) for k, v in section.props]
    return config, env


def find(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for key in ("initContainers", "containers") for c in pod["spec"].get(key) or [] if c["name"] == name]
    assert len(found) == 1, f"expected one container {name}"
    return found[0]


def mount_of(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volumeMount a path in the container is on (the deepest one), and its volume."""
    mounts = [m for m in container.get("volumeMounts") or []
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on the container's root filesystem, on no volume"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    return mount, volume


def file_in_container(pod: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """A file the container reads: here, one of a downwardAPI volume, rendered from the Pod's metadata."""
    mount, volume = mount_of(pod, container, path)
    assert "downwardAPI" in volume, f"{path} is on volume {volume}: only a downwardAPI one can be read here"
    relative = path[len(mount["mountPath"].rstrip("/")) + 1:]
    item = next((i for i in volume["downwardAPI"]["items"] if i["path"] == relative), None)
    assert item is not None, f"the downwardAPI volume has no {relative}"
    return field_value(pod, item["fieldRef"]["fieldPath"])


def writable_state(pod: dict[str, Any], container: dict[str, Any], path: str) -> str:
    """Asserts Fluent Bit can write `path` and it outlives a restart of the container; its volume's name."""
    mount, volume = mount_of(pod, container, path)
    assert not mount.get("readOnly"), f"{path} is on a read-only mount"
    assert "emptyDir" in volume, f"{path} is not on an emptyDir (it must outlive the container)"
    assert mount["name"] != "podpatterns-app-logs", f"{path} is on the app's log volume"
    return mount["name"]


def boolean(value: str | None) -> bool | None:
    """flb_utils_bool()."""
    if value is None:
        return None
    lowered = value.lower()
    return True if lowered in ("true", "on", "yes") else False if lowered in ("false", "off", "no") else None


def size_bytes(value: str) -> int:
    """flb_utils_size_to_bytes(): K, M, G are powers of 1000."""
    found = re.fullmatch(r"(\d+)\s*([KMG]?)B?", value.upper())
    assert found, f"not a size: {value}"
    return int(found.group(1)) * {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}[found.group(2)]


# -- injecting ------------------------------------------------------------------------------------------

def inject(tmp_path: Path, doc: dict[str, Any]) -> tuple[int, str, str]:
    source = tmp_path / "in.yaml"
    source.write_text(yaml.safe_dump(doc))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = podpatterns(["inject", "-f", str(source)])
    return code, out.getvalue(), err.getvalue()


def pod_manifest(annotations: dict[str, str], name: str = "web", namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                          "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}


def injected(tmp_path: Path, entry: str, **params: str) -> dict[str, Any]:
    annotations = {"podpatterns.io/inject": entry, **{f"{entry}.podpatterns.io/{k}": v for k, v in params.items()}}
    code, out, err = inject(tmp_path, pod_manifest(annotations))
    assert code == 0, err
    return yaml.safe_load(out)


def matches(pattern: str, tag: str) -> bool:
    return fnmatch.fnmatchcase(tag, pattern)


# -- log-shipper ----------------------------------------------------------------------------------------

def test_shipper_tails_the_log_dir_with_offsets_and_a_disk_buffer_on_its_state_volume(tmp_path):
    pod = injected(tmp_path, "log-shipper", logDir="/var/log/checkout")
    config, _ = fluent_bit_of(pod, "log-shipper")
    container = find(pod, "log-shipper")
    tail = config.one("input", "tail")
    assert tail.get("path").split(",")[0] == "/var/log/checkout/*.log"
    assert all(p.startswith("/var/log/checkout/") for p in tail.get("path").split(","))
    # The app's files: on the shared log volume, which the shipper only reads.
    mount, _ = mount_of(pod, container, "/var/log/checkout/app.log")
    assert mount["name"] == "podpatterns-app-logs" and mount["readOnly"] is True
    app_mount = next(m for m in find(pod, "app")["volumeMounts"] if m["name"] == "podpatterns-app-logs")
    assert app_mount["mountPath"] == "/var/log/checkout" and not app_mount.get("readOnly")
    assert {"name": "LOG_DIR", "value": "/var/log/checkout"} in find(pod, "app")["env"]
    # Offsets survive a restart, and files present at start are read from their beginning.
    assert tail.get("db"), "no tail db: a restart re-reads or skips"
    assert boolean(tail.get("read_from_head")) is True
    assert boolean(tail.get("db.locking")) is True
    assert tail.get("path_key") == "file"
    # A file rotated (app.log -> app.log.1) while the shipper is down keeps its offset and is read to its
    # end (measured: 150 of 299 lines lost without it); followed until deleted, never read twice.
    first, *more = tail.get("path").split(",")
    assert first.replace("*.log", "*.log.1") in more
    assert int(tail.get("rotate_wait")) >= 86400
    # The backlog on disk: the input's chunks on the filesystem, under the service's storage.path.
    assert tail.get("storage.type") == "filesystem"
    storage = config.service.get("storage.path")
    assert storage, "no storage.path: storage.type=filesystem has nowhere to go"
    assert writable_state(pod, container, tail.get("db")) == "podpatterns-log-shipper-state"
    assert writable_state(pod, container, storage) == "podpatterns-log-shipper-state"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsUser"] == 65532
    # Long lines: shipped up to buffer_max_size, skipped alone beyond it.
    assert size_bytes(tail.get("buffer_max_size")) >= 10**6
    assert boolean(tail.get("skip_long_lines")) is True


def test_shipper_forwards_to_the_endpoint_with_unlimited_retries_within_buffer_mb(tmp_path):
    pod = injected(tmp_path, "log-shipper", endpoint="192.0.2.2:24224", bufferMB="16")
    config, _ = fluent_bit_of(pod, "log-shipper")
    forward = config.one("output", "forward")
    assert (forward.get("host"), forward.get("port")) == ("192.0.2.2", "24224")
    assert forward.get("retry_limit").lower() in ("no_limits", "false")
    # Delivered means acknowledged: a batch in flight when the server stops is retried (measured: 202 of
    # 14,078 lines lost in a 60 s outage without it, none with it).
    assert boolean(forward.get("require_ack_response")) is True
    # Retries at most 30 s apart, whatever the outage's length (Fluent Bit's own cap is 2000 s).
    assert float(config.service.get("scheduler.cap")) <= 30
    assert size_bytes(forward.get("storage.total_limit_size")) == 16 * 10**6
    assert matches(forward.get("match"), config.one("input", "tail").get("tag"))
    assert float(config.service.get("flush")) <= 5
    requests = find(pod, "log-shipper")["resources"]["requests"]
    assert requests["ephemeral-storage"] == "16M"


def test_shipper_buffer_mb_default_and_bounds(tmp_path):
    config, _ = fluent_bit_of(injected(tmp_path, "log-shipper"), "log-shipper")
    assert size_bytes(config.one("output", "forward").get("storage.total_limit_size")) == 256 * 10**6
    code, _, err = inject(tmp_path, pod_manifest({"podpatterns.io/inject": "log-shipper",
                                                  "log-shipper.podpatterns.io/bufferMB": "15"}))
    assert code == 1 and "log-shipper.podpatterns.io/bufferMB" in err


def test_shipper_tag_and_fields_carry_the_real_pod_name_from_the_downward_api(tmp_path):
    """A Deployment's Pod has only a generateName when the webhook sees it; the name comes later."""
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": {"podpatterns.io/inject": "log-shipper"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}}
    code, out, err = inject(tmp_path, deployment)
    assert code == 0, err
    template = yaml.safe_load(out)["spec"]["template"]
    # As the apiserver creates the ReplicaSet's Pod, then names it.
    pod = {"metadata": {**template["metadata"], "generateName": "web-7c9d8b6f5d-", "name": "web-7c9d8b6f5d-x2k8p",
                        "namespace": "shop"}, "spec": template["spec"]}
    config, env = fluent_bit_of(pod, "log-shipper")
    tail = config.one("input", "tail")
    assert tail.get("tag") == "podpatterns.shop.web-7c9d8b6f5d-x2k8p"
    added = {}
    for section in config.of("filter"):
        assert matches(section.get("match") or "", tail.get("tag")), f"{section.name} does not apply"
        pairs = section.all("record") if section.name == "record_modifier" else \
            section.all("add") + section.all("set") if section.name == "modify" else []
        added.update(pair.split(" ", 1) for pair in pairs)
    assert added.get("namespace") == "shop" and added.get("pod") == "web-7c9d8b6f5d-x2k8p"
    assert tail.get("path_key") == "file"
    # A file rotated (app.log -> app.log.1) while the shipper is down keeps its offset and is read to its
    # end (measured: 150 of 299 lines lost without it); followed until deleted, never read twice.
    first, *more = tail.get("path").split(",")
    assert first.replace("*.log", "*.log.1") in more
    assert int(tail.get("rotate_wait")) >= 86400
    # The name is not known at admission: it is not in what the webhook wrote.
    assert "x2k8p" not in out
    refs = {var["name"]: var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            for var in find(pod, "log-shipper")["env"]}
    assert refs.get("POD_NAME") == "metadata.name" and refs.get("POD_NAMESPACE") == "metadata.namespace"
    assert env["POD_NAME"] == "web-7c9d8b6f5d-x2k8p"


def test_shipper_endpoint_may_be_a_dns_name(tmp_path):
    pod = injected(tmp_path, "log-shipper", endpoint="fluentd.logging-prod.svc.cluster.local:24240")
    forward = fluent_bit_of(pod, "log-shipper")[0].one("output", "forward")
    assert (forward.get("host"), forward.get("port")) == ("fluentd.logging-prod.svc.cluster.local", "24240")


# -- json-log-adapter -----------------------------------------------------------------------------------

def test_adapter_reads_the_log_dir_and_prints_json_lines_with_the_time_key(tmp_path):
    pod = injected(tmp_path, "json-log-adapter", logDir="/srv/app/logs", timeKey="ts")
    config, _ = fluent_bit_of(pod, "json-log-adapter")
    container = find(pod, "json-log-adapter")
    tail = config.one("input", "tail")
    assert tail.get("path").split(",")[0] == "/srv/app/logs/*.log"
    mount, _ = mount_of(pod, container, "/srv/app/logs/app.log")
    assert mount["name"] == "podpatterns-app-logs" and mount["readOnly"] is True
    assert boolean(tail.get("read_from_head")) is True
    assert writable_state(pod, container, tail.get("db")) == "podpatterns-json-log-adapter-state"
    outputs = config.of("output")
    assert [o.name for o in outputs] == ["stdout"], "only the records may reach the container's stdout"
    stdout = outputs[0]
    assert stdout.get("format") == "json_lines"
    assert stdout.get("json_date_key") == "ts"
    assert stdout.get("json_date_format") == "iso8601"
    assert matches(stdout.get("match"), tail.get("tag") or "tail.0")
    if tail.get("storage.type") == "filesystem":
        assert writable_state(pod, container, config.service.get("storage.path")) == "podpatterns-json-log-adapter-state"


def test_adapter_diagnostics_go_to_a_file_on_its_state_volume(tmp_path):
    pod = injected(tmp_path, "json-log-adapter")
    config, _ = fluent_bit_of(pod, "json-log-adapter")
    container = find(pod, "json-log-adapter")
    log_file = config.service.get("log_file")
    assert log_file, "no log file: Fluent Bit's own messages would go to the container's log with the records"
    assert writable_state(pod, container, log_file) == "podpatterns-json-log-adapter-state"
    # -q silences everything until a configuration turns the log back on; then it goes to the file.
    if config.quiet:
        level = (config.service.get("log_level") or "off").lower()
        assert level in ("error", "warn", "warning", "info", "debug", "trace"), f"-q and log_level {level}: no log at all"
    parsers_file = config.service.get("parsers_file")
    assert parsers_file == "/fluent-bit/etc/parsers.conf"  # the image's standard parsers


STANDARD_PARSERS = {"json": "json", "nginx": "nginx", "apache": "apache", "logfmt": "logfmt",
                    "syslog": "syslog-rfc5424", "syslog-rfc3164": "syslog-rfc3164"}
PARSER_FORMATS = {"json": "json", "nginx": "regex", "apache": "regex", "logfmt": "logfmt", "syslog": "regex",
                  "syslog-rfc3164": "regex"}


@pytest.mark.parametrize("fmt", ["plain", *STANDARD_PARSERS])
def test_adapter_format_selects_its_parser(tmp_path, fmt):
    config, _ = fluent_bit_of(injected(tmp_path, "json-log-adapter", format=fmt), "json-log-adapter")
    tail = config.one("input", "tail")
    assert tail.all("multiline.parser") == []
    if fmt == "plain":
        assert tail.all("parser") == [], "plain: every line comes out as {\"log\": line}"
        return
    parser = tail.get("parser")
    assert len(tail.all("parser")) == 1
    if parser in config.parsers:  # a parser of the entry's own, defined in its configuration
        assert config.parsers[parser].get("format") == PARSER_FORMATS[fmt]
    else:
        assert parser == STANDARD_PARSERS[fmt]


@pytest.mark.parametrize("language", ["java", "python", "go"])
def test_adapter_multiline_selects_the_builtin_multiline_parser(tmp_path, language):
    config, _ = fluent_bit_of(injected(tmp_path, "json-log-adapter", multiline=language), "json-log-adapter")
    tail = config.one("input", "tail")
    assert tail.all("multiline.parser") == [language]
    assert tail.all("parser") == []


def test_adapter_defaults_set_no_parser_at_all(tmp_path):
    config, _ = fluent_bit_of(injected(tmp_path, "json-log-adapter"), "json-log-adapter")
    tail = config.one("input", "tail")
    assert not [k for k, _ in tail.props if k in ("parser", "multiline.parser", "multiline")]


def test_adapter_rejects_unknown_format(tmp_path):
    code, _, err = inject(tmp_path, pod_manifest({"podpatterns.io/inject": "json-log-adapter",
                                                  "json-log-adapter.podpatterns.io/format": "csv"}))
    assert code == 1 and "json-log-adapter.podpatterns.io/format" in err


# -- the reader itself, on Fluent Bit's rules -----------------------------------------------------------

def test_reader_follows_fluent_bits_command_line_rules():
    config = read_command_line(["-b", "/s", "-i", "tail", "-t", "x", "-p", "path=/a/*.log", "-p", "", "-p", "junk",
                                "-m", "ignored-on-input", "-F", "grep", "-m", "x", "-p", "regex=log a=b",
                                "-o", "forward://h:1", "-m", "*", "--prop=retry_limit=no_limits", "-f", "1",
                                "-lfile", "-R", "/p.conf", "-q"])
    tail, grep, forward = config.sections
    assert tail.props == [("name", "tail"), ("tag", "x"), ("path", "/a/*.log")]
    assert grep.get("match") == "x" and grep.get("regex") == "log a=b"
    assert (forward.get("host"), forward.get("port"), forward.get("retry_limit")) == ("h", "1", "no_limits")
    assert config.service.get("storage.path") == "/s" and config.service.get("log_file") == "file"
    assert config.service.get("parsers_file") == "/p.conf" and config.quiet
    with pytest.raises(AssertionError):
        read_command_line(["-i", "tail", "path=/a"])  # a forgotten -p
    with pytest.raises(AssertionError):
        read_command_line(["-p", "path=/a"])


# -- logDir values that must be refused -----------------------------------------------------------------

@pytest.mark.parametrize("entry", ["log-shipper", "json-log-adapter"])
@pytest.mark.parametrize("log_dir", ["/", "/etc", "/var/log/../../etc", "/fluent-bit", "/var/lib/podpatterns/x"])
def test_bad_log_dir_is_denied_naming_the_annotation(tmp_path, entry, log_dir):
    code, out, err = inject(tmp_path, pod_manifest({"podpatterns.io/inject": entry,
                                                    f"{entry}.podpatterns.io/logDir": log_dir}))
    assert code == 1
    assert out == ""
    assert f"{entry}.podpatterns.io/logDir" in err and "denied" in err
