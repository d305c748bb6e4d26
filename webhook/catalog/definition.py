"""The PatternTemplate's shape, defined once: the loader checks fields against it, the CRD's schema is made from it.

The loader (catalogue.py) reads its field names and allowed values from here, checks every document with
`problems` (what the apiserver would refuse or prune), and itself checks what a schema cannot say (placeholders,
the strict Pod schema for containers, Pod Security); `crd()` turns the same definition into the
CustomResourceDefinition the chart ships, so `kubectl apply` and `--catalog` accept the same documents.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterator, Mapping

import jsonschema

from webhook.core import parameters

GROUP = "podpatterns.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PatternTemplate"
PLURAL = "patterntemplates"
PATTERNS = ("sidecar", "adapter", "ambassador")
LIFECYCLES = ("native", "regular", "auto")
APP_FIELDS = {"env": "env", "volumeMounts": "volumeMount"}  # appContainers field -> core/v1 definition
# Patterns in the subset Go's RE2 (the apiserver) and Python's re read alike; the loader uses them with fullmatch.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # an entry's, a container's, a volume's name
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # a Secret's name
_NAME = {"type": "string", "maxLength": 63, "pattern": DNS_LABEL}

# Kubernetes objects the loader checks against the strict core/v1 schema itself (with placeholders in them):
# the CRD keeps them whole, so its messages are the loader's, with the field path.
_KUBERNETES_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
# Their names are fixed DNS labels (no placeholders): a clash with the Pod's own is found by name.
_NAMED_OBJECTS = {"type": "array", "items": {**_KUBERNETES_OBJECT, "required": ["name"], "properties": {"name": _NAME}}}
_ANY_SCALAR = {"x-kubernetes-preserve-unknown-fields": True}  # a string, a number or a boolean: the type decides

PARAMETER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": parameters.NAME.pattern},
        "type": {"type": "string", "enum": list(parameters.TYPES)},
        "required": {"type": "boolean"},
        "default": _ANY_SCALAR,
        "description": {"type": "string"},
        "pattern": {"type": "string"},
        "enum": {"type": "array", "items": _ANY_SCALAR},
        "minimum": {"x-kubernetes-int-or-string": True},
        "maximum": {"x-kubernetes-int-or-string": True},
        "renderAs": {"type": "object", "additionalProperties": {"type": "string"}},
        "notUnder": {"type": "array", "items": {"type": "string"}},
    },
}
assert set(PARAMETER["properties"]) == parameters.DECLARATION_FIELDS  # one list of fields, in core

SPEC = {
    "type": "object",
    "required": ["pattern", "containers"],
    "properties": {
        "pattern": {"type": "string", "enum": list(PATTERNS), "description": "sidecar, adapter or ambassador"},
        "description": {"type": "string"},
        "lifecycle": {"type": "string", "enum": list(LIFECYCLES),
                      "description": "native (init container, restartPolicy Always), regular, or auto (default: "
                                     "native where the cluster has native sidecars)"},
        "parameters": {"type": "array", "items": PARAMETER},
        "containers": {**_NAMED_OBJECTS, "minItems": 1},
        "volumes": _NAMED_OBJECTS,
        "appContainers": {"type": "object", "properties": {
            field: {"type": "array", "items": _KUBERNETES_OBJECT} for field in APP_FIELDS}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "imagePullSecrets": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN}}}},
    },
}
SPEC_FIELDS = frozenset(SPEC["properties"])

STATUS = {
    "type": "object",
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "digest": {"type": "string", "description": "the digest Pods injected with this entry carry"},
        "lifecycle": {"type": "string", "description": "how its containers run in this cluster"},
        "origin": {"type": "string", "description": "the source the server serves this entry from"},
        "conditions": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                    "observedGeneration": {"type": "integer", "format": "int64"},
                },
            },
        },
    },
}


SCHEMA = {
    "type": "object",
    "description": "A catalogue entry of podpatterns: the containers, volumes and app changes one "
                   "pattern injects, with typed parameters. See the podpatterns README.",
    "required": ["spec"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        # A CRD may constrain only the name: an entry's is a DNS label, as the loader checks.
        "metadata": {"type": "object", "properties": {"name": _NAME}},
        "spec": SPEC,
        "status": STATUS,
    },
}


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition of PatternTemplate (cluster-scoped, with a status subresource)."""
    definition = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}",
                     "annotations": {f"{GROUP}/generated-by": "podpatterns catalog crd"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": KIND.lower(),
                      "shortNames": ["ptpl"], "categories": ["podpatterns"]},
            "scope": "Cluster",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Pattern", "type": "string", "jsonPath": ".spec.pattern"},
                    {"name": "Lifecycle", "type": "string", "jsonPath": ".status.lifecycle"},
                    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                    {"name": "Digest", "type": "string", "jsonPath": ".status.digest"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": SCHEMA},
            }],
        },
    }
    # A copy that shares no node: YAML would write a node used twice as an anchor and an alias.
    return json.loads(json.dumps(definition))


def problems(document: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path, message) for each way the apiserver would refuse `document` as a PatternTemplate: a value the schema
    refuses, or a field it does not know (it would prune it, and `kubectl apply` refuses it: strict field validation).
    So a file the loader accepts applies as-is, and the object read back has the same spec and digest."""
    for error in sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            for key in sorted(set(error.instance) - set(known)):
                yield path + (key,), f"{_dotted(path + (key,))}: unknown field; allowed: {', '.join(sorted(known))}"
        else:
            yield path, f"{_dotted(path) or 'the document'}: {error.message}"


def _dotted(path: tuple[Any, ...]) -> str:
    return "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Validator:
    return jsonschema.Draft7Validator(_as_json_schema(SCHEMA, root=True))


def _as_json_schema(node: Any, root: bool = False) -> Any:
    """The apiserver's reading of a structural schema in JSON Schema terms: an object without
    x-kubernetes-preserve-unknown-fields takes only its properties (metadata is the apiserver's own), and
    x-kubernetes-int-or-string takes an integer or a string."""
    if not isinstance(node, dict):
        return node
    out = {key: _as_json_schema(value) for key, value in node.items() if key not in ("properties", "items",
                                                                                      "additionalProperties")}
    if "items" in node:
        out["items"] = _as_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _as_json_schema(node["additionalProperties"])
    if "properties" in node:
        out["properties"] = {name: (value if root and name == "metadata" else _as_json_schema(value))
                             for name, value in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    return out
