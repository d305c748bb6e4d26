"""The workloads behind injected Pods, through the API: their Pods and owners, a restart, and waiting for its rollout."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from webhook.cluster import kubeclient
from webhook.cluster.podlists import pages, read_namespaces
from webhook.cluster.webhookconfig import EXCLUDED
from webhook.core import inventory, rollouts
from webhook.core.configuration import Configuration
from webhook.core.engine import NamespaceInfo
from webhook.core.inventory import Inventory, Workload

STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def take_inventory(api: Any, configuration: Configuration, namespace: str | None,
                   never_sent: tuple[str, ...] = (), mandatory: bool = True) -> Inventory:
    """The inventory of the Pods in `namespace` (None: all), with `mandatory` checked against the policy's mandatory
    rules. The Namespaces the webhook is never called for (the control plane's, `never_sent`) are not: their Pods
    cannot have the entries."""
    pods = [pod for page in pages(api, namespace) for pod in page]
    owners = Owners(api)
    mandatory = mandatory and any(rule.mandatory and rule.inject for rule in configuration.policy.rules)
    # The Namespaces' labels decide which rules select a Pod; without a mandatory rule they are not read.
    namespaces = _namespaces(api, namespace, set(EXCLUDED) | set(never_sent)) if mandatory else None
    return inventory.take(((pod, owners.workload(pod)) for pod in pods), configuration, namespaces)


def _namespaces(api: Any, namespace: str | None, excluded: set[str]) -> dict[str, NamespaceInfo]:
    return {name: info for name, info in read_namespaces(api, namespace).items() if name not in excluded}


class Owners:
    """Each Pod's workload, reading each ReplicaSet and Job once: a Deployment's Pods belong to it through their
    ReplicaSet, a CronJob's through their Job."""

    def __init__(self, api: Any):
        from kubernetes import client

        self.apps, self.batch = client.AppsV1Api(api), client.BatchV1Api(api)
        self.parents: dict[tuple[str, str, str], tuple[str, str] | None] = {}

    def workload(self, pod: dict[str, Any]) -> Workload:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace") or ""
        owner = inventory.controller(pod)
        if owner is None:
            return Workload(namespace, "Pod", meta.get("name") or "")
        kind, name = owner
        if kind in ("ReplicaSet", "Job"):
            parent = self._parent(kind, namespace, name)
            if parent is not None and parent[0] == {"ReplicaSet": "Deployment", "Job": "CronJob"}[kind]:
                kind, name = parent
        return Workload(namespace, kind, name)

    def _parent(self, kind: str, namespace: str, name: str) -> tuple[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        key = (kind, namespace, name)
        if key not in self.parents:
            read = (self.apps.read_namespaced_replica_set if kind == "ReplicaSet" else self.batch.read_namespaced_job)
            try:
                obj = json.loads(read(name, namespace, _preload_content=False, _request_timeout=kubeclient.TIMEOUT).data)
            except ApiException as err:
                if err.status != 404:
                    raise
                obj = {}  # deleted while its Pods terminate: they are shown under it
            self.parents[key] = inventory.controller(obj)
        return self.parents[key]


def _api(api: Any, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    from kubernetes import client

    apps = client.AppsV1Api(api)
    suffix = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}[kind]
    return getattr(apps, f"read_namespaced_{suffix}"), getattr(apps, f"patch_namespaced_{suffix}")


def read(api: Any, workload: Workload) -> dict[str, Any]:
    get, _ = _api(api, workload.kind)
    return json.loads(get(workload.name, workload.namespace, _preload_content=False,
                          _request_timeout=kubeclient.TIMEOUT).data)


def restart(api: Any, workload: Workload, at: str) -> dict[str, Any]:
    """Patches the pod template's restartedAt annotation, as `kubectl rollout restart`; returns the patched object
    (its metadata.generation is the one the rollout must reach)."""
    _, patch = _api(api, workload.kind)
    return json.loads(patch(workload.name, workload.namespace, rollouts.restart_patch(at),
                            _content_type=STRATEGIC_MERGE_PATCH, _preload_content=False,
                            _request_timeout=kubeclient.TIMEOUT).data)


def wait(api: Any, workload: Workload, generation: int, timeout: float | None,
         report: Callable[[str], None] = lambda message: None, interval: float = 0.5) -> rollouts.Progress:
    """Reads the workload until its rollout is done, has failed, or `timeout` seconds (None: no limit) have passed;
    returns the last progress. Each new message goes to `report`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    said = None
    while True:
        progress = rollouts.progress(workload.kind, read(api, workload), generation)
        if progress.message != said and not progress.done:
            report(progress.message)
            said = progress.message
        if progress.done or progress.failed or (deadline is not None and time.monotonic() >= deadline):
            return progress
        time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
