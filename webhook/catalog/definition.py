"""The PatternTemplate's shape, defined once: the loader checks fields against it, the CRD's schema is made from it.

The loader (catalogue.py) reads its field names and allowed values from here and checks what a schema cannot say
(placeholders, the strict Pod schema for containers, Pod Security); `crd()` turns the same definition into the
CustomResourceDefinition the chart ships, so `kubectl apply` and `--catalog` accept the same documents.
"""

from __future__ import annotations

from typing import Any

from webhook.core import parameters

GROUP = "podpatterns.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "PatternTemplate"
PLURAL = "patterntemplates"
PATTERNS = ("sidecar", "adapter", "ambassador")
LIFECYCLES = ("native", "regular", "auto")
APP_FIELDS = {"env": "env", "volumeMounts": "volumeMount"}  # appContainers field -> core/v1 definition

# Kubernetes objects the loader checks against the strict core/v1 schema itself (with placeholders in them):
# the CRD keeps them whole, so its messages are the loader's, with the field path.
_KUBERNETES_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_NAMED_OBJECTS = {"type": "array", "items": {**_KUBERNETES_OBJECT, "required": ["name"],
                                              "properties": {"name": {"type": "string"}}}}
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
        "imagePullSecrets": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                         "properties": {"name": {"type": "string"}}}},
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


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition of PatternTemplate (cluster-scoped, with a status subresource)."""
    return {
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
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A catalogue entry of podpatterns: the containers, volumes and app changes one "
                                   "pattern injects, with typed parameters. See the podpatterns README.",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        # A CRD may constrain only the name: an entry's is a DNS label, as the loader checks.
                        "metadata": {"type": "object", "properties": {"name": {
                            "type": "string", "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}}},
                        "spec": SPEC,
                        "status": STATUS,
                    },
                }},
            }],
        },
    }
