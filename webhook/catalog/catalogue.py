"""The catalogue: PatternTemplate entries, loaded and fully validated before any Pod sees them.

Built-in entries ship in `webhook/catalog/builtin/`; a directory of YAML files adds entries or overrides
built-ins by name. Every problem is reported with its file and line, and a catalogue with any problem
is refused whole, so a running server keeps its last good one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson
import yaml

from webhook.catalog import definition, schema
from webhook.catalog.definition import API_VERSION, APP_FIELDS, KIND, LIFECYCLES, PATTERNS, SPEC_FIELDS
from webhook.catalog.restricted import (
    container_violations,
    template_violations,
    volume_violations,
)
from webhook.catalog.sourcemap import (
    Document,
    Invalid,
    Problem,
    Problems,
    SourceError,
    load_documents,
)
from webhook.core.entries import Catalogue, Entry
from webhook.core.keys import DEFAULT_PREFIX
from webhook.core.parameters import Parameter, ParameterError
from webhook.core.template import (
    TemplateError,
    compile_tree,
    references,
    render,
    sequence,
)

SECRET_NAME = re.compile(definition.DNS_SUBDOMAIN)
# An annotation an entry adds (e.g. a config file handed to its container through the downward API):
# a qualified name under a DNS prefix of its own, never one of the user contract's keys.
ANNOTATION_KEY = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
DNS_LABEL = re.compile(definition.DNS_LABEL)
SAMPLE_POD = {"pod.name": "sample", "pod.namespace": "default", "pod.serviceAccountName": "default"}
APP_STAND_IN = "podpatterns-app-stand-in"


OBJECT_PREFIX = "patterntemplate/"  # the file name a cluster object's entry and problems carry


class CatalogueError(Problems):
    pass


def load(directories: Iterable[str | Path] = ()) -> Catalogue:
    """The built-in entries, overlaid by each directory in turn; raises CatalogueError."""
    entries = builtin_entries()
    for directory in directories:
        entries.update(load_directory(directory))
    return Catalogue(entries)


def merge(directories: Iterable[str | Path] = (), objects: Mapping[str, Mapping[str, Any]] | None = None) -> Catalogue:
    """The catalogue the server serves: built-ins, overlaid by each directory in turn, overlaid by the cluster's
    PatternTemplate objects (name -> object as the API returns it). Raises CatalogueError naming every problem;
    a cluster object's problems name `patterntemplate/NAME` and the line in its `object_text`."""
    entries: dict[str, Entry] = {}
    for _, found in sources(directories, objects):
        entries |= found
    return Catalogue(entries)


def sources(directories: Iterable[str | Path] = (), objects: Mapping[str, Mapping[str, Any]] | None = None,
            ) -> list[tuple[str, dict[str, Entry]]]:
    """Where `merge` takes entries from, lowest precedence first, each as (kind, entries): ("built-in", …), a
    ("directory", …) per directory, ("cluster object", …); an entry overrides those of its name before it."""
    found = [("built-in", builtin_entries())] + [("directory", load_directory(d)) for d in directories]
    if objects:
        found.append(("cluster object", load_texts({f"{OBJECT_PREFIX}{name}": object_text(obj)
                                                    for name, obj in sorted(objects.items())})))
    return found


def builtin_entries() -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for item in sorted(resources.files("webhook.catalog").joinpath("builtin").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".yaml"):
            entries.update(_unique(load_text(item.read_text(), f"built-in {item.name}")))
    return entries


def load_directory(directory: str | Path) -> dict[str, Entry]:
    folder = Path(directory)
    if not folder.is_dir():
        raise CatalogueError([Problem(str(folder), 0, "not a directory")])
    problems: list[Problem] = []
    texts: dict[str, str] = {}
    # Names starting with "." are skipped: a mounted ConfigMap keeps its real files under ..data/.
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")):
        try:
            texts[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            problems.append(Problem(str(path), 0, f"cannot read: {err}"))
    try:
        entries = load_texts(texts)
    except CatalogueError as err:
        problems.extend(err.problems)
    if problems:
        raise CatalogueError(sorted(problems, key=lambda p: p.file))
    return entries


def load_texts(texts: Mapping[str, str]) -> dict[str, Entry]:
    """The entries of several files' texts (file name -> text): a directory's files, or a release ConfigMap's keys."""
    problems: list[Problem] = []
    entries: list[Entry] = []
    for filename, text in texts.items():
        try:
            entries.extend(load_text(text, filename))
        except CatalogueError as err:
            problems.extend(err.problems)
    if problems:
        raise CatalogueError(problems)
    return _unique(entries)


def object_text(obj: Mapping[str, Any]) -> str:
    """A PatternTemplate object read from the API, as the YAML document the loader reads: what a user wrote (its
    apiVersion, kind, name and spec; the API's own metadata and the status left out). Its spec is the one the user
    applied, so the entry's digest is the one the same file gives with --catalog."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    document = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                "metadata": {"name": metadata.get("name")}, "spec": obj.get("spec")}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _unique(entries: list[Entry]) -> dict[str, Entry]:
    seen: dict[str, Entry] = {}
    for entry in entries:
        if entry.name in seen:
            raise CatalogueError([Problem(entry.origin, 0, f"entry {entry.name} is also defined at {seen[entry.name].origin}")])
        seen[entry.name] = entry
    return seen


def load_text(text: str, filename: str) -> list[Entry]:
    try:
        documents = load_documents(text)
    except SourceError as err:
        raise CatalogueError([Problem(filename, err.line, err.message)]) from None
    entries, problems = [], []
    for doc in documents:
        try:
            entries.append(_entry(doc, filename))
        except Invalid as err:
            problems.append(Problem(filename, doc.line_of(err.path), err.message, err.path))
        except CatalogueError as err:
            problems.extend(err.problems)
    if problems:
        raise CatalogueError(problems)
    return entries


def _entry(doc: Document, filename: str) -> Entry:
    data = doc.data
    if not isinstance(data, dict):
        raise Invalid((), f"a catalogue document must be a {KIND} mapping")
    if data.get("apiVersion") != API_VERSION or data.get("kind") != KIND:
        raise Invalid(("kind",), f"expected apiVersion: {API_VERSION} and kind: {KIND}")
    name = (data.get("metadata") or {}).get("name") if isinstance(data.get("metadata"), dict) else None
    if not isinstance(name, str) or not DNS_LABEL.fullmatch(name):
        raise Invalid(("metadata", "name"), f"metadata.name {name!r} must be a DNS label (a-z, 0-9, -; at most 63)")
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise Invalid(("spec",), "spec must be a mapping")
    _only(spec, SPEC_FIELDS, ("spec",))
    pattern = spec.get("pattern")
    if pattern not in PATTERNS:
        raise Invalid(("spec", "pattern"), f"spec.pattern {pattern!r} must be one of {', '.join(PATTERNS)}")
    lifecycle = spec.get("lifecycle", "auto")
    if lifecycle not in LIFECYCLES:
        raise Invalid(("spec", "lifecycle"), f"spec.lifecycle {lifecycle!r} must be one of {', '.join(LIFECYCLES)}")
    parameters = _parameters(spec.get("parameters", []))
    containers = _named_list(spec, "containers", required=True)
    for i, container in enumerate(containers):
        if "restartPolicy" in container:
            raise Invalid(("spec", "containers", i, "restartPolicy"), "set spec.lifecycle instead of a container restartPolicy")
    volumes = _named_list(spec, "volumes")
    app = spec.get("appContainers", {})
    if not isinstance(app, dict):
        raise Invalid(("spec", "appContainers"), "spec.appContainers must be a mapping")
    _only(app, set(APP_FIELDS), ("spec", "appContainers"))

    annotations = _annotations(spec.get("annotations", {}), name, parameters)
    pull_secrets = _pull_secrets(spec.get("imagePullSecrets", []))
    # What the checks above leave to the CRD's schema: a file valid here applies as-is with kubectl apply.
    for path, message in definition.problems(data):
        raise Invalid(path, message)

    def compiled(node: Any, definition: str, path: tuple[Any, ...]) -> Any:
        try:
            return compile_tree(node, parameters, lambda sub: schema.field_type(definition, sub))
        except TemplateError as err:
            raise Invalid(path + err.path, err.message) from None

    entry = Entry(
        name=name,
        pattern=pattern,
        description=str(spec.get("description", "")),
        parameters=parameters,
        containers=sequence([compiled(c, "container", ("spec", "containers", i)) for i, c in enumerate(containers)]),
        volumes=sequence([compiled(v, "volume", ("spec", "volumes", i)) for i, v in enumerate(volumes)]),
        app_env=sequence([compiled(e, "env", ("spec", "appContainers", "env", i)) for i, e in enumerate(_list(app, "env"))]),
        app_mounts=sequence([
            compiled(m, "volumeMount", ("spec", "appContainers", "volumeMounts", i))
            for i, m in enumerate(_list(app, "volumeMounts"))
        ]),
        annotations=annotations,
        image_pull_secrets=pull_secrets,
        lifecycle=lifecycle,
        digest="sha256:" + hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16],
        origin=f"{filename}:{doc.line_of(())}",
    )
    warnings = _check_sample(entry, doc, filename)
    return dataclasses.replace(entry, warnings=tuple(warnings))


def _check_sample(entry: Entry, doc: Document, filename: str) -> list[str]:
    """Renders the entry with sample values and checks the result against the strict Pod schema."""
    values = {f"params.{p.name}": p.rendered(p.sample()) for p in entry.parameters.values()} | SAMPLE_POD
    containers = render(entry.containers, values)
    volumes = render(entry.volumes, values)
    stand_in = {"name": APP_STAND_IN, "image": "app", "env": render(entry.app_env, values),
                "volumeMounts": render(entry.app_mounts, values)}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sample"},
           "spec": {"containers": containers + [stand_in], "volumes": volumes}}
    problems = []
    for path, message in schema.pod_errors(pod):
        source = _source_path(path, len(containers))
        problems.append(Problem(filename, doc.line_of(source), message, tuple(source)))
    declared = {v["name"] for v in volumes}
    for i, container in enumerate(containers + [stand_in]):
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if isinstance(mount, dict) and mount.get("name") not in declared:
                source = _source_path(["spec", "containers", i, "volumeMounts", j], len(containers))
                problems.append(Problem(filename, doc.line_of(source),
                                        f"volumeMount {mount.get('name')!r} names no volume of this entry "
                                        f"(declared: {', '.join(sorted(declared)) or 'none'})", tuple(source)))
    if problems:
        raise CatalogueError(problems)
    return ([v for c in containers for v in container_violations(c)]
            + [v for c in entry.containers for v in template_violations(c)]
            + [v for vol in volumes for v in volume_violations(vol)])


def _source_path(path: list[Any], injected: int) -> list[Any]:
    """Maps a path in the sample Pod back to the template document."""
    if path[:2] == ["spec", "containers"] and len(path) > 2 and path[2] == injected:
        return ["spec", "appContainers", *path[3:]]
    return path


def _pull_secrets(data: Any) -> tuple[str, ...]:
    """spec.imagePullSecrets, as a Pod writes them ([{name: regcred}]): Secret names added to the Pod's own."""
    path = ("spec", "imagePullSecrets")
    if not isinstance(data, list):
        raise Invalid(path, "spec.imagePullSecrets must be a list of {name: SECRET}")
    names = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"name"} or not isinstance(item["name"], str) \
                or not SECRET_NAME.fullmatch(item["name"]):
            raise Invalid(path + (i,), "each imagePullSecrets item is {name: SECRET}, a Secret's name (a DNS subdomain)")
        names.append(item["name"])
    return tuple(dict.fromkeys(names))


def _annotations(data: Any, entry: str, parameters: dict[str, Parameter]) -> Any:
    """The annotations the entry adds to the Pod, compiled. A value is text some program parses (a config
    file), so a placeholder in it may only take values that cannot change that text's structure: an enum,
    a pattern, a path, a hostPort, an integer or a boolean, and the Pod's own names."""
    path = ("spec", "annotations")
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise Invalid(path, "spec.annotations must map annotation keys to strings")
    for key in data:
        if not isinstance(key, str) or not ANNOTATION_KEY.match(key):
            raise Invalid(path + (key,), f"annotation key {key!r} must be prefix/name (a DNS prefix, a name of at most 63)")
        if key.startswith(f"{entry}.{DEFAULT_PREFIX}/") or key.split("/")[0] == DEFAULT_PREFIX:
            raise Invalid(path + (key,), f"annotation key {key!r} is the user contract's ({DEFAULT_PREFIX}/… and "
                                         f"{entry}.{DEFAULT_PREFIX}/…); use a prefix of the entry's own, e.g. "
                                         f"{entry}.config.{DEFAULT_PREFIX}/")
    try:
        compiled = compile_tree(data, parameters, lambda _: "string")
    except TemplateError as err:
        raise Invalid(path + err.path, err.message) from None
    for key in data:
        for ref in sorted(references(compiled[key])):
            scope, _, name = ref.partition(".")
            param = parameters.get(name) if scope == "params" else None
            if param is not None and param.type == "string" and not param.enum and param.pattern is None:
                raise Invalid(path + (key,), f"${{{ref}}} in an annotation needs a parameter with an enum or a "
                                             f"pattern: a free string could change the text's structure")
    return compiled


def _parameters(declared: Any) -> dict[str, Parameter]:
    if not isinstance(declared, list):
        raise Invalid(("spec", "parameters"), "spec.parameters must be a list")
    out: dict[str, Parameter] = {}
    for i, spec in enumerate(declared):
        try:
            param = Parameter.declare(spec)
        except ParameterError as err:
            raise Invalid(("spec", "parameters", i), str(err)) from None
        if param.name in out:
            raise Invalid(("spec", "parameters", i), f"parameter {param.name} is declared twice")
        out[param.name] = param
    return out


def _list(app: dict[str, Any], key: str) -> list[Any]:
    value = app.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise Invalid(("spec", "appContainers", key), f"spec.appContainers.{key} must be a list of mappings")
    return value


def _named_list(spec: dict[str, Any], key: str, required: bool = False) -> list[dict[str, Any]]:
    items = spec.get(key, [])
    if not isinstance(items, list) or (required and not items):
        raise Invalid(("spec", key), f"spec.{key} must be a {'non-empty ' if required else ''}list")
    names = set()
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or "$" in name or not DNS_LABEL.fullmatch(name):
            raise Invalid(("spec", key, i), f"spec.{key}[{i}].name must be a fixed DNS label (no placeholders)")
        if name in names:
            raise Invalid(("spec", key, i), f"spec.{key}[{i}].name {name!r} is used twice")
        names.add(name)
    return items


def _only(mapping: dict[str, Any], allowed: set[str], path: tuple[Any, ...]) -> None:
    for key in mapping:
        if key not in allowed:
            raise Invalid(path + (key,), f"unknown field {'.'.join(map(str, path + (key,)))}; allowed: {', '.join(sorted(allowed))}")
