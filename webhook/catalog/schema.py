"""The Kubernetes JSON schemas that ship with kubernetes-validate: used at load time only.

Catalogue entries are checked against the strict core/v1 Pod schema (unknown fields are errors), and
the schema tells the template compiler which fields are integers, so `containerPort: ${params.port}`
renders a number while `value: ${params.port}` in an env var renders a string.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

UNEXPECTED = re.compile(r"'([^']+)' (?:was|were) unexpected")
VERSION = kubernetes_validate.latest_version()
DEFINITION = {
    "container": "io.k8s.api.core.v1.Container",
    "volume": "io.k8s.api.core.v1.Volume",
    "env": "io.k8s.api.core.v1.EnvVar",
    "volumeMount": "io.k8s.api.core.v1.VolumeMount",
}


def _read(name: str) -> dict[str, Any]:
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{VERSION}-local-strict"
    return json.loads((folder / name).read_text())


@functools.lru_cache(maxsize=1)
def _definitions() -> dict[str, Any]:
    return _read("_definitions.json")


@functools.lru_cache(maxsize=1)
def _pod_validator() -> jsonschema.Draft202012Validator:
    pod = _read("pod-v1.json")
    registry = Registry().with_resources(
        [("", Resource.from_contents(pod)), ("_definitions.json", Resource.from_contents(_definitions()))]
    )
    return jsonschema.Draft202012Validator(pod, registry=registry)


def pod_errors(pod: dict[str, Any]) -> Iterator[tuple[list[Any], str]]:
    """(path, message) for every way `pod` breaks the strict Pod schema."""
    for error in _pod_validator().iter_errors(pod):
        path = list(error.absolute_path)
        if error.validator == "additionalProperties":  # point at the unexpected key, not its parent
            unexpected = UNEXPECTED.search(error.message)
            path += [unexpected.group(1)] if unexpected else []
        yield path, error.message


def field_type(definition: str, path: tuple[Any, ...]) -> str:
    """'integer', 'boolean', 'int-or-string', 'string' or 'other' for the field at `path` below a definition."""
    defs = _definitions()["$defs"]
    node: dict[str, Any] = defs[DEFINITION[definition]]
    for step in path:
        node = _resolve(defs, node)
        if isinstance(step, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(step) or node.get("additionalProperties") or {}
            if not isinstance(node, dict):
                return "other"
    node = _resolve(defs, node)
    kinds = _types(node)
    for option in node.get("oneOf", ()):  # IntOrString and Quantity: a string or a number
        kinds += _types(option)
    if "string" in kinds and ("integer" in kinds or "number" in kinds):
        return "int-or-string"
    for kind in ("integer", "boolean", "string"):
        if kind in kinds:
            return kind
    return "other"


def _types(node: dict[str, Any]) -> list[str]:
    kinds = node.get("type", [])
    return [kinds] if isinstance(kinds, str) else list(kinds)


def _resolve(defs: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node
