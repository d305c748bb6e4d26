"""The PatternTemplate CRD: the chart's crds/ file is what `podpatterns catalog crd` prints, valid and structural for
the chart's Kubernetes versions; every catalogue file applies as-is (the apiserver's schema accepts it and prunes
nothing, and the object read back gives the same entry and digest); `podpatterns catalog list` names where each entry
comes from, with the cluster's objects read from the stand-in API.

The apiserver's side is modelled here, apart from the loader's own check (webhook/catalog/definition.py `problems`):
validation with jsonschema (x-kubernetes-int-or-string is an integer or a string, x-kubernetes-preserve-unknown-fields
keeps what is below it) and pruning (elsewhere a field the schema does not name is dropped, which `kubectl apply`'s
strict field validation turns into an error).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helpers import GOLDEN, ROOT, podpatterns_command
from tests.kubeapi import KubeApi
from tests.test_chart import CHART, KUBE_VERSIONS
from webhook.catalog import catalogue
from webhook.cli import commands as cli

CRD_FILE = CHART / "crds" / "patterntemplates.podpatterns.io.yaml"
COLLECTION = "/apis/podpatterns.io/v1alpha1/patterntemplates"
BUILTIN_DIR = ROOT / "webhook" / "catalog" / "builtin"


def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_FILE.read_text())


def open_api_schema() -> dict[str, Any]:
    (version,) = crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


# --- The apiserver's reading of the schema

def _as_json_schema(node: Any) -> Any:
    """The schema for jsonschema: int-or-string takes an integer or a string; unknown fields are pruning's business."""
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: (_as_json_schema(value) if key in ("items", "additionalProperties") else value)
           for key, value in node.items() if key != "properties"}
    if "properties" in node:
        out["properties"] = {name: _as_json_schema(value) for name, value in node["properties"].items()}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def pruned(value: Any, node: dict[str, Any], path: str = "") -> Iterator[str]:
    """The fields the apiserver would drop from `value`: those its schema node does not name, unless the node
    preserves unknown fields. The root's metadata is ObjectMeta, the apiserver's own."""
    if isinstance(value, dict):
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if path == "" and key == "metadata":
                continue
            if key in properties:
                yield from pruned(child, properties[key], where)
            elif isinstance(extra, dict):
                yield from pruned(child, extra, where)
            elif not node.get("x-kubernetes-preserve-unknown-fields"):
                yield where
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            yield from pruned(item, node["items"], f"{path}[{i}]")


def refusals(document: dict[str, Any]) -> list[str]:
    """What `kubectl apply -f` of the document gets back from the apiserver: schema errors and unknown fields."""
    schema = open_api_schema()
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft4Validator(_as_json_schema(schema)).iter_errors(document)]
    return errors + [f"{field}: unknown field" for field in pruned(document, schema)]


def stored(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The object the apiserver keeps for an accepted document: what kubectl sent plus its own metadata."""
    obj = copy.deepcopy(document)
    obj["metadata"] = {**obj["metadata"], "uid": "6b1c0f4e-0000-4000-8000-000000000001", "generation": 1,
                       "resourceVersion": "4242", "creationTimestamp": "2026-01-01T00:00:00Z",
                       "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(document)},
                       "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update"}]}
    obj["status"] = {"digest": "sha256:0000000000000000", "lifecycle": "native"}
    return obj


# --- The catalogue files a user would apply

def _readme_example() -> str:
    """The README's catalogue example, its `[...]` elisions filled with a container, as a user completes it."""
    text = (ROOT / "README.md").read_text().split("## The catalogue format", 1)[1]
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    container = ('[{name: db-ambassador, image: "alpine/socat:1.8.0.3", args: ["TCP-LISTEN:${params.port},fork,'
                 'bind=127.0.0.1", "TCP:${params.upstream}"]}]')
    assert "containers: [...]" in example and "volumes: [...]" in example
    return example.replace("containers: [...]", f"containers: {container}").replace("volumes: [...]", "volumes: []")


def catalogue_files() -> dict[str, str]:
    """Label -> text: the built-ins, golden PatternTemplates, the README's example, the chart's catalogue values."""
    files = {f"built-in {p.name}": p.read_text() for p in sorted(BUILTIN_DIR.glob("*.yaml"))}
    for path in sorted(GOLDEN.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and doc.get("kind") == "PatternTemplate":
                files[f"golden {path.name} #{i}"] = yaml.safe_dump(doc, sort_keys=False)
    files["README catalogue example"] = _readme_example()
    values = yaml.safe_load((CHART / "ci" / "guard-values.yaml").read_text())
    for file, value in values["catalogue"].items():
        files[f"chart ci/guard-values.yaml catalogue {file}"] = value if isinstance(value, str) else yaml.safe_dump(value)
    from tests.test_chart import _example_entry
    files["chart catalogue value (tests/test_chart.py)"] = _example_entry()
    return files


FILES = catalogue_files()


# --- The CRD itself

def test_the_chart_ships_exactly_what_podpatterns_catalog_crd_prints():
    done = subprocess.run([*podpatterns_command(), "catalog", "crd"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == CRD_FILE.read_text(), (
        f"{CRD_FILE.relative_to(ROOT)} is not what `podpatterns catalog crd` prints; regenerate it with\n"
        f"  podpatterns catalog crd > {CRD_FILE.relative_to(ROOT)}")


def test_the_crd_is_valid_for_the_charts_kubernetes_versions():
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(crd(), version, strict=True)
    broken = crd()
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["preserveUnknownFields"] = True
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


def test_a_cluster_scoped_crd_with_a_status_subresource_and_printer_columns_that_exist():
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "patterntemplates.podpatterns.io"
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["plural"]) == (
        "podpatterns.io", "Cluster", "PatternTemplate", "patterntemplates")
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert [c["name"].upper() for c in columns] == ["PATTERN", "LIFECYCLE", "READY", "DIGEST", "AGE"]  # as kubectl prints
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        steps = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"]).lstrip(".").split(".")
        if steps[0] == "metadata":
            continue  # ObjectMeta, the apiserver's
        node = schema
        for step in steps:
            node = node["properties"][step.removesuffix("[]")]
            if step.endswith("[]"):
                node = node["items"]
        assert node["type"] == column["type"], column
    ready = version["additionalPrinterColumns"][2]["jsonPath"]
    assert ready == '.status.conditions[?(@.type=="Ready")].status'


def structural_problems(node: Any, path: str = "", root: bool = True) -> Iterator[str]:
    """The rules of a structural schema (apiextensions.k8s.io/v1) that this CRD relies on."""
    assert isinstance(node, dict), path
    open_ended = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if not node.get("type") and not open_ended:
        yield f"{path or '<root>'}: no type (only x-kubernetes-int-or-string or -preserve-unknown-fields may omit it)"
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        yield f"{path}: x-kubernetes-int-or-string takes no type"
    if "x-kubernetes-preserve-unknown-fields" in node and node["x-kubernetes-preserve-unknown-fields"] is not True:
        yield f"{path}: x-kubernetes-preserve-unknown-fields must be true or absent"
    if "default" in node:
        yield f"{path}: a default changes the stored spec, and so the digest"
    for keyword in ("$ref", "oneOf", "anyOf", "allOf", "not", "additionalItems", "dependencies", "patternProperties",
                    "definitions", "uniqueItems"):
        if keyword in node:
            yield f"{path}: {keyword} (not in a structural schema, or in this CRD)"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties and additionalProperties together"
    if node.get("additionalProperties") is False:
        yield f"{path}: additionalProperties: false (pruning does that)"
    if node.get("type") == "array" and "items" not in node:
        yield f"{path}: an array without items"
    if node.get("x-kubernetes-list-type") == "map":
        items = node["items"]
        for key in node["x-kubernetes-list-map-keys"]:
            if key not in items.get("required", []) or items["properties"][key].get("type") not in ("string", "integer"):
                yield f"{path}: map key {key} must be a required scalar"
    for value in node.get("enum", []):
        if {"string": str, "integer": int}.get(node.get("type"), object) is not object and \
                not isinstance(value, {"string": str, "integer": int}[node["type"]]):
            yield f"{path}: enum value {value!r} is not a {node['type']}"
    for name, child in (node.get("properties") or {}).items():
        if root and name == "metadata":
            if set(child) - {"type", "properties"} or set(child.get("properties", {})) - {"name", "generateName"}:
                yield "metadata: only name and generateName may be constrained"
            continue
        yield from structural_problems(child, f"{path}.{name}".lstrip("."), root=False)
    if isinstance(node.get("additionalProperties"), dict):
        yield from structural_problems(node["additionalProperties"], f"{path}.*", root=False)
    if isinstance(node.get("items"), dict):
        yield from structural_problems(node["items"], f"{path}[]", root=False)


def test_the_schema_is_structural_and_defaults_nothing():
    schema = open_api_schema()
    assert schema["type"] == "object" and schema["required"] == ["spec"]
    assert list(structural_problems(schema)) == []
    # The checker can fail: an untyped node, a default, a constrained label.
    broken = copy.deepcopy(schema)
    broken["properties"]["spec"]["properties"]["description"] = {"description": "untyped"}
    broken["properties"]["spec"]["properties"]["lifecycle"]["default"] = "auto"
    broken["properties"]["metadata"]["properties"]["labels"] = {"type": "object"}
    assert len(list(structural_problems(broken))) == 3


# --- Catalogue files apply as-is

@pytest.mark.parametrize("label", sorted(FILES))
def test_every_catalogue_file_applies_as_is_and_reads_back_with_the_same_digest(label):
    text = FILES[label]
    entries = {e.name: e for e in catalogue.load_text(text, "file.yaml")}  # valid for --catalog
    documents = [d for d in yaml.safe_load_all(text) if d]
    assert len(documents) == len(entries) >= 1
    for document in documents:
        name = document["metadata"]["name"]
        assert refusals(document) == [], f"{label}: kubectl apply would be refused"
        back = stored(document, name)
        (entry,) = catalogue.load_text(catalogue.object_text(back), f"{catalogue.OBJECT_PREFIX}{name}")
        assert (entry.name, entry.digest) == (name, entries[name].digest), label
        assert entry.origin == f"patterntemplate/{name}:1"


@pytest.mark.parametrize("change, field", [
    (lambda d: d["spec"].update(sidecars=[]), "spec.sidecars: unknown field"),
    (lambda d: d["spec"].update(pattern="proxy"), "spec.pattern: 'proxy' is not one of"),
    (lambda d: d["spec"].update(lifecycle="always"), "spec.lifecycle: 'always' is not one of"),
    (lambda d: d["spec"].update(containers=[]), "spec.containers: [] should be non-empty"),
    (lambda d: d["spec"]["containers"][0].update(name="${params.name}"), "spec.containers.0.name: '${params.name}' does not match"),
    (lambda d: d["spec"]["parameters"][0].update(type="text"), "spec.parameters.0.type: 'text' is not one of"),
    (lambda d: d["spec"]["parameters"][0].update(required="yes"), "spec.parameters.0.required: 'yes' is not of type 'boolean'"),
    (lambda d: d["spec"]["parameters"][0].update(minimum=1.5), "spec.parameters.0.minimum: 1.5 is not valid under any"),
    (lambda d: d["spec"].update(description=5), "spec.description: 5 is not of type 'string'"),
    (lambda d: d["spec"].update(imagePullSecrets=[{"name": "Reg_Cred"}]), "spec.imagePullSecrets.0.name: 'Reg_Cred' does not match"),
    (lambda d: d["metadata"].update(name="Log_Shipper"), "metadata.name: 'Log_Shipper' does not match"),
    (lambda d: d.update(data={"a": "b"}), "data: unknown field"),
], ids=["unknown-spec-field", "bad-pattern", "bad-lifecycle", "no-containers", "placeholder-name", "parameter-type",
        "required-not-boolean", "minimum-float", "description-number", "secret-name", "entry-name", "unknown-top-field"])
def test_what_the_schema_can_say_it_refuses_and_catalog_validate_refuses_it_too(tmp_path, capsys, change, field):
    document = yaml.safe_load((BUILTIN_DIR / "log-shipper.yaml").read_text())
    change(document)
    assert any(r.startswith(field) for r in refusals(document)), refusals(document)
    (tmp_path / "entry.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    assert cli.main(["catalog", "validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'entry.yaml'}:" in err and "1 problem(s)" in err, err


def test_a_file_only_the_schema_refuses_is_refused_by_the_loader_with_the_field_and_line(tmp_path, capsys):
    # A description the loader used to print as "5"; the apiserver wants a string.
    lines = (BUILTIN_DIR / "log-shipper.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith("  description: "))
    lines[line - 1] = "  description: 5"
    (tmp_path / "entry.yaml").write_text("\n".join(lines) + "\n")
    assert cli.main(["catalog", "validate", str(tmp_path)]) == 1
    assert f"{tmp_path / 'entry.yaml'}:{line}: spec.description: 5 is not of type 'string'" in capsys.readouterr().err


# --- catalog list: where each entry comes from

def _entry_text(name: str, description: str, source: str = "log-shipper") -> str:
    text = (BUILTIN_DIR / f"{source}.yaml").read_text()
    document = yaml.safe_load(text)
    document["metadata"]["name"] = name
    document["spec"]["description"] = description
    return yaml.safe_dump(document, sort_keys=False)


@pytest.fixture
def api():
    with KubeApi() as stand_in:
        yield stand_in


def _apply(api: KubeApi, text: str) -> None:
    """`kubectl apply -f` as the apiserver stores it: checked, nothing pruned, its own metadata added."""
    for document in yaml.safe_load_all(text):
        assert refusals(document) == []
        api.put(document, f"{COLLECTION}/{document['metadata']['name']}")


def _listed(out: str) -> dict[str, list[str]]:
    """Entry name -> its lines (the head line first)."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            found[line.split()[0]] = [line]
        else:
            found[list(found)[-1]].append(line)
    return found


def test_catalog_list_merges_built_ins_directories_and_cluster_objects_and_names_what_each_overrides(api, tmp_path, capsys):
    directory = tmp_path / "catalogue"
    directory.mkdir()
    (directory / "shipper.yaml").write_text(_entry_text("log-shipper", "from the directory"))
    (directory / "tailer.yaml").write_text(_entry_text("tailer", "a directory entry"))
    _apply(api, _entry_text("log-shipper", "from the cluster"))
    _apply(api, _entry_text("db-ambassador", "the cluster's own proxy", "db-ambassador"))
    _apply(api, _entry_text("cluster-only", "only in the cluster"))
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")

    assert cli.main(["catalog", "list", "--catalog", str(directory), "--cluster", "--kubeconfig", str(kubeconfig)]) == 0
    listed = _listed(capsys.readouterr().out)
    assert sorted(listed) == ["cluster-only", "db-ambassador", "json-log-adapter", "log-shipper", "tailer"]
    builtin = catalogue.builtin_entries()
    shipper = listed["log-shipper"]
    assert shipper[0].endswith("  from cluster object patterntemplate/log-shipper"), shipper[0]
    assert shipper[1] == (f"    overrides the built-in ({builtin['log-shipper'].origin.removeprefix('built-in ')}), "
                          f"the directory entry ({directory / 'shipper.yaml'}:1)")
    assert shipper[2] == "    from the cluster"
    assert listed["db-ambassador"][1] == f"    overrides the built-in ({builtin['db-ambassador'].origin.removeprefix('built-in ')})"
    assert listed["json-log-adapter"][0].endswith(f"  from {builtin['json-log-adapter'].origin}")
    assert not listed["json-log-adapter"][1].startswith("    overrides")
    assert listed["tailer"][0].endswith(f"  from directory {directory / 'tailer.yaml'}:1")
    assert listed["cluster-only"][0].endswith("  from cluster object patterntemplate/cluster-only")
    assert listed["cluster-only"][1] == "    only in the cluster"
    # The cluster's object carries the digest the same file gives with --catalog.
    (directory / "shipper.yaml").write_text(_entry_text("log-shipper", "from the cluster"))
    assert cli.main(["catalog", "list", "--catalog", str(directory)]) == 0
    from_file = _listed(capsys.readouterr().out)["log-shipper"][0]
    digest = re.search(r"sha256:[0-9a-f]{16}", from_file).group(0)
    assert digest in shipper[0] and digest != builtin["log-shipper"].digest
    assert [r.path for r in api.lists(COLLECTION)] == [COLLECTION]  # one list, read once


def test_catalog_list_without_the_cluster_shows_directory_overrides_and_asks_no_api(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a.yaml").write_text(_entry_text("log-shipper", "first"))
    (second / "b.yaml").write_text(_entry_text("log-shipper", "second"))
    assert cli.main(["catalog", "list", "--catalog", str(first), "--catalog", str(second)]) == 0
    shipper = _listed(capsys.readouterr().out)["log-shipper"]
    assert shipper[0].endswith(f"  from directory {second / 'b.yaml'}:1")
    assert shipper[1].endswith(f", the directory entry ({first / 'a.yaml'}:1)")
    assert shipper[1].startswith("    overrides the built-in (log-shipper.yaml:")


def test_a_broken_cluster_object_is_named_with_its_line(api, tmp_path, capsys):
    document = yaml.safe_load(_entry_text("log-shipper", "broken"))
    document["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # preserved by the CRD; the Pod schema refuses it
    api.put(document, f"{COLLECTION}/log-shipper")
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    assert cli.main(["catalog", "list", "--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err
    assert "podpatterns: the catalogue is broken:" in err
    line = next(i for i, t in enumerate(catalogue.object_text(api.get(f"{COLLECTION}/log-shipper")).splitlines(), 1)
                if "imagePullPolicyy" in t)
    assert f"patterntemplate/log-shipper:{line}: " in err and "imagePullPolicyy" in err


@pytest.mark.parametrize("status, reason, expected", [
    (404, "NotFound", "podpatterns catalog list: the cluster has no PatternTemplate CRD (patterntemplates.podpatterns.io): "
                      "install it with kubectl apply -f charts/podpatterns/crds/"),
    (403, "Forbidden", "podpatterns catalog list: forbidden: "),
])
def test_no_crd_or_no_permission_is_said_plainly(api, tmp_path, capsys, status, reason, expected):
    api.fault("GET", COLLECTION, status=status, reason=reason, message="refused by the test")
    assert cli.main(["catalog", "list", "--cluster", "--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig"))]) == 2
    assert capsys.readouterr().err.startswith(expected)
