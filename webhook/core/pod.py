"""A checked view of the Pod fields the engine reads.

The apiserver only sends well-formed Pods, but the CLI reads hand-written files and the endpoint must
answer anything it is sent: every field is type-checked here once, so the engine can trust its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
STRING_OR_ABSENT = {str, type(None)}


class PodShapeError(ValueError):
    """The object is not shaped like a core/v1 Pod where the engine needs to read it."""


class NeedsWholePod(Exception):
    """The plan needs more of the Pod than its typed fields (webhook.core.podfields): it is made again from the
    whole Pod."""


@dataclass(slots=True)  # read-only by convention: a frozen dataclass's __init__ costs ~2 µs more a request
class PodView:
    raw: dict[str, Any]
    metadata: dict[str, Any] | None
    annotations: dict[str, str]
    has_annotations: bool
    labels: dict[str, str]
    name: str  # metadata.name, else generateName (a Pod of a ReplicaSet has no name yet at CREATE)
    namespace: str
    spec: dict[str, Any]
    lists: dict[str, list[dict[str, Any]] | None]  # the three container lists; None when absent
    volumes: list[dict[str, Any]] | None
    # Only the fields of webhook.core.podfields, decoded with their exact types (check_containers holds by
    # construction); a plan that needs more raises NeedsWholePod.
    partial: bool = False

    def needs_whole(self) -> None:
        if self.partial:
            raise NeedsWholePod()

    @property
    def containers(self) -> list[dict[str, Any]]:
        return self.lists["containers"] or []


def _dict(value: Any, where: str, *, optional: bool = True) -> dict[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise PodShapeError(f"{where} must be an object, got {_kind(value)}")
    return value


def _named_list(value: Any, where: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise PodShapeError(f"{where} must be a list, got {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise PodShapeError(f"{where}[{i}] must be an object, got {_kind(item)}")
        if not isinstance(item.get("name"), str):
            raise PodShapeError(f"{where}[{i}].name must be a string")
    return value


def _list_of_objects(items: Any) -> bool:
    # The types of the items compared as a set (map at C speed): these lists are most of a big Pod.
    return items is None or (type(items) is list and {*map(type, items)} <= {dict})


def _optional_strings(items: list[dict[str, Any]], field: str, kind: str, index: int, listed: str) -> None:
    """The engine keys dictionaries by this field of spec.KIND[INDEX].LISTED[]: it must be a string where
    it is present."""
    if {type(item.get(field)) for item in items} <= STRING_OR_ABSENT:
        return
    j, value = next((j, item[field]) for j, item in enumerate(items) if type(item.get(field)) not in STRING_OR_ABSENT)
    raise PodShapeError(f"spec.{kind}[{index}].{listed}[{j}].{field} must be a string, got {_kind(value)}")


def check_containers(pod: PodView) -> None:
    """Checks the container fields injection reads: ports of regular and init containers, env and
    volumeMounts of the app containers. Only Pods that get something injected pay for it, and it is
    one of the few parts of a plan that grows with the Pod: messages are formatted only on failure. A
    partial view's types were checked as it was decoded."""
    if pod.partial:
        return
    for kind in ("containers", "initContainers"):
        for i, container in enumerate(pod.lists[kind] or ()):
            ports = container.get("ports")
            if not _list_of_objects(ports):
                raise PodShapeError(f"spec.{kind}[{i}].ports must be a list of objects")
            for j, port in enumerate(ports or ()):
                if type(port.get("containerPort")) is not int:
                    raise PodShapeError(f"spec.{kind}[{i}].ports[{j}].containerPort must be an integer")
            if ports:
                _optional_strings(ports, "protocol", kind, i, "ports")
            if kind == "containers":
                for field, key in (("env", "name"), ("volumeMounts", "mountPath")):
                    items = container.get(field)
                    if not _list_of_objects(items):
                        raise PodShapeError(f"spec.{kind}[{i}].{field} must be a list of objects")
                    if items:
                        _optional_strings(items, key, kind, i, field)


def check_resources(pod: PodView) -> None:
    """Checks the resources of the app's containers and init containers, for the policy's limits rules."""
    for kind in ("containers", "initContainers"):
        for i, container in enumerate(pod.lists[kind] or ()):
            where = f"spec.{kind}[{i}].resources"
            resources = _dict(container.get("resources"), where) or {}
            for field in ("requests", "limits"):
                _dict(resources.get(field), f"{where}.{field}")


def _shown(key: str, limit: int = 100) -> str:
    """A key as quoted in a message, cut short: the answer must not echo a hostile 64 KB key whole."""
    return repr(key) if len(key) <= limit else repr(key[:limit]) + "…"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__.replace("dict", "object").replace("str", "string")


def read_pod(obj: Any, namespace: str = "", name: str = "", partial: bool = False) -> PodView:
    """Checks `obj` and returns the view; `namespace` and `name` are used when the object has none. `partial`:
    `obj` holds only the fields of webhook.core.podfields, as the typed decode of a request gives them, whose
    types are checked already (the loops over annotations, labels and lists are skipped: they grow with the Pod)."""
    pod = _dict(obj, "the Pod", optional=False)
    metadata = _dict(pod.get("metadata"), "metadata")
    annotations = _dict((metadata or {}).get("annotations"), "metadata.annotations")
    labels = _dict((metadata or {}).get("labels"), "metadata.labels") or {}
    if not partial:
        for key, value in (annotations or {}).items():
            if not isinstance(value, str):
                raise PodShapeError(f"metadata.annotations[{_shown(key)}] must be a string, got {_kind(value)}")
        for key, value in labels.items():
            if not isinstance(value, str):
                raise PodShapeError(f"metadata.labels[{_shown(key)}] must be a string, got {_kind(value)}")
    spec = _dict(pod.get("spec"), "spec", optional=False)
    if partial:
        lists = {name: spec.get(name) for name in CONTAINER_LISTS}
        volumes = spec.get("volumes")
    else:
        lists = {name: _named_list(spec.get(name), f"spec.{name}") for name in CONTAINER_LISTS}
        volumes = _named_list(spec.get("volumes"), "spec.volumes")
    if not lists["containers"]:
        raise PodShapeError("spec.containers must list at least one container")
    meta = metadata or {}
    name = meta.get("name") or meta.get("generateName") or name
    ns = meta.get("namespace") or namespace
    if not isinstance(name, str) or not isinstance(ns, str):
        raise PodShapeError("metadata.name, generateName and namespace must be strings")
    if not isinstance(spec.get("serviceAccountName") or "", str):  # a template may render ${pod.serviceAccountName}
        raise PodShapeError(f"spec.serviceAccountName must be a string, got {_kind(spec['serviceAccountName'])}")
    return PodView(
        raw=pod,
        metadata=metadata,
        annotations=annotations or {},
        has_annotations=annotations is not None,
        labels=labels,
        name=name,
        namespace=ns,
        spec=spec,
        lists=lists,
        volumes=volumes,
        partial=partial,
    )
