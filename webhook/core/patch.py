"""Explicit RFC 6902 operations for a planned injection.

Each addition becomes one operation against the Pod as it arrived: arrays are created when absent and
appended to otherwise, so the cost is the size of what is added, never the size of the Pod.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.core.combined import Combined
from webhook.core.keys import pointer_token
from webhook.core.pod import PodView

Op = dict[str, Any]


@dataclass
class Additions:
    annotations: dict[str, str] = field(default_factory=dict)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    native_sidecars: list[dict[str, Any]] = field(default_factory=list)  # go first in initContainers
    containers: list[dict[str, Any]] = field(default_factory=list)  # appended to containers
    app_env: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # by app container index
    app_mounts: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    # (container list, index) -> the whole new resources object of an app container (policy defaults)
    app_resources: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    # Strip and re-inject (webhook.core.verify): (list, index) -> the entry's container that replaces the Pod's
    replaced: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    replaced_volumes: dict[int, dict[str, Any]] = field(default_factory=dict)
    # "requests"/"limits" -> resource -> the Pod-level value that replaces the Pod's (webhook.core.podresources)
    pod_resources: dict[str, dict[str, str]] = field(default_factory=dict)
    pull_secrets: list[str] = field(default_factory=list)  # appended to spec.imagePullSecrets
    # The combination these come from when added as it is (webhook.core.additions._all_at_once): its values'
    # JSON is known already.
    combined: Combined | None = field(default=None, compare=False, repr=False)


def operations(pod: PodView, add: Additions, wire: bool = False) -> list[Op]:
    """`wire`: the operations only for orjson to write (the server's patch): values whose JSON the combination
    knows are orjson Fragments, and the app containers' env operations are one Fragment, their volumeMounts
    operations another (orjson writes a Fragment as it is, several operations in one). The same bytes as
    orjson.dumps of the plain operations."""
    if wire and add.combined is not None:
        return _wire(_operations(pod, add, app=False), pod, add, add.combined.json)
    return _operations(pod, add)


def _operations(pod: PodView, add: Additions, app: bool = True) -> list[Op]:
    ops: list[Op] = []
    if add.annotations:
        if pod.metadata is None:
            ops.append({"op": "add", "path": "/metadata", "value": {"annotations": add.annotations}})
        elif not pod.has_annotations:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": add.annotations})
        else:
            for key, value in add.annotations.items():
                verb = "replace" if key in pod.annotations else "add"
                ops.append({"op": verb, "path": "/metadata/annotations/" + pointer_token(key), "value": value})
    # Before the native sidecars are inserted: they shift the indexes of the app's init containers.
    for (kind, index), resources in add.app_resources.items():
        ops.append({"op": "add", "path": f"/spec/{kind}/{index}/resources", "value": resources})
    for (kind, index), container in add.replaced.items():
        ops.append({"op": "replace", "path": f"/spec/{kind}/{index}", "value": container})
    for index, volume in add.replaced_volumes.items():
        ops.append({"op": "replace", "path": f"/spec/volumes/{index}", "value": volume})
    for kind, values in add.pod_resources.items():
        for resource, quantity in values.items():
            ops.append({"op": "replace", "path": f"/spec/resources/{kind}/{resource}", "value": quantity})
    _extend(ops, "/spec/volumes", pod.volumes, add.volumes)
    _extend(ops, "/spec/imagePullSecrets", pod.spec.get("imagePullSecrets"), [{"name": n} for n in add.pull_secrets])
    if add.native_sidecars:
        if pod.lists["initContainers"] is None:
            ops.append({"op": "add", "path": "/spec/initContainers", "value": add.native_sidecars})
        else:
            # Native sidecars go before the Pod's own init containers, so those can already use them.
            for i, container in enumerate(add.native_sidecars):
                ops.append({"op": "add", "path": f"/spec/initContainers/{i}", "value": container})
    _extend(ops, "/spec/containers", pod.containers, add.containers)
    if not app:
        return ops
    # One operation or more for every app container: the part of the patch that grows with the Pod.
    containers = pod.containers
    for key, additions in (("env", add.app_env), ("volumeMounts", add.app_mounts)):
        for index, items in additions.items():
            _extend(ops, f"/spec/containers/{index}/{key}", containers[index].get(key), items)
    return ops


def _wire(ops: list[Op], pod: PodView, add: Additions, known: dict[int, Any]) -> list[Any]:
    for op in ops:
        value = op["value"]
        # A list (the native sidecars, the volumes, added whole) is written element by element: the engine's
        # copies of the combination's lists, where limits may have replaced a container with its own.
        op["value"] = [known.get(id(v), v) for v in value] if type(value) is list else known.get(id(value), value)
    chunks, containers = add.combined.chunks, pod.containers
    for key, additions in (("env", add.app_env), ("volumeMounts", add.app_mounts)):
        if additions:
            absent, present = chunks[key, False], chunks[key, True]
            ops.append(orjson.Fragment(b",".join((absent if containers[index].get(key) is None else present)
                                                 .replace(b"\x00", b"%d" % index) for index in additions)))
    return ops


def _extend(ops: list[Op], path: str, current: list[Any] | None, items: list[Any]) -> None:
    if not items:
        return
    if current is None:
        ops.append({"op": "add", "path": path, "value": items})
    else:
        path += "/-"
        # A plain loop: for the one to three items an app container gets, a comprehension's own call
        # cost more than the items (measured: 280 -> 180 µs for the 738 operations of a 256 KB Pod).
        for item in items:
            ops.append({"op": "add", "path": path, "value": item})
