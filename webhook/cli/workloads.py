"""Where a manifest keeps its Pod: the object itself, or the pod template of a workload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TEMPLATE_PATH: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class Target:
    kind: str
    name: str
    namespace: str
    path: tuple[str, ...]
    pod: Any  # the Pod, or the pod template (metadata + spec)

    @property
    def label(self) -> str:
        where = "" if self.kind == "Pod" else " (pod template)"
        return f"{self.kind} {self.name or '<unnamed>'} in namespace {self.namespace}{where}"

    @property
    def name_for_pod(self) -> str:
        """What ${pod.name} becomes: a workload's Pods are named after it, like a generateName."""
        return self.name if self.kind == "Pod" else f"{self.name}-"


def find(doc: Any, default_namespace: str) -> Target | None:
    """The Pod inside `doc`, or None for objects that hold no Pod (Services, ConfigMaps…)."""
    if not isinstance(doc, dict) or doc.get("kind") not in TEMPLATE_PATH:
        return None
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    node: Any = doc
    for step in TEMPLATE_PATH[doc["kind"]]:
        node = node.get(step) if isinstance(node, dict) else None
    return Target(
        kind=doc["kind"],
        name=str(meta.get("name") or meta.get("generateName") or ""),
        namespace=str(meta.get("namespace") or default_namespace),
        path=TEMPLATE_PATH[doc["kind"]],
        pod=node,
    )


def put(doc: dict[str, Any], target: Target, pod: Any) -> dict[str, Any]:
    """`doc` with its Pod (or pod template) replaced by `pod`."""
    if not target.path:
        return pod
    node = doc
    for step in target.path[:-1]:
        node = node[step]
    node[target.path[-1]] = pod
    return doc
