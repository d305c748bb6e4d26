"""Restarting a workload as `kubectl rollout restart` does, and deciding its progress as `kubectl rollout status` does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
RESTARTABLE = ("Deployment", "StatefulSet", "DaemonSet")

# Why the Pods of a workload podpatterns does not restart stay as they are, and what to do instead.
LEFT_TO_YOU = {
    "Pod": "a bare Pod: delete it and create it again",
    "Job": "a Job: let it finish, or delete it and create it again",
    "CronJob": "a CronJob: its next Job gets the current entries; delete a running Job and create it again to have them now",
    "ReplicaSet": "a ReplicaSet without a Deployment: delete its Pods and it creates them again",
}


def restart_patch(at: str) -> dict[str, Any]:
    """The strategic merge patch `kubectl rollout restart` sends: a new pod template, so new Pods."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}


def left_to_you(kind: str) -> str:
    return LEFT_TO_YOU.get(kind, f"owned by a {kind}, which podpatterns does not restart: delete its Pods yourself")


def blocker(kind: str, obj: dict[str, Any]) -> str | None:
    """Why restarting this workload would roll nothing out, or None. kubectl refuses a paused Deployment; an
    OnDelete strategy replaces Pods only when someone deletes them."""
    spec = obj.get("spec") or {}
    if kind == "Deployment" and spec.get("paused"):
        return "the Deployment is paused: run `kubectl rollout resume` first, or restart it yourself"
    strategy = (spec.get("updateStrategy") or {}).get("type") or "RollingUpdate"
    if kind in ("StatefulSet", "DaemonSet") and strategy != "RollingUpdate":
        return f"updateStrategy {strategy}: a restart replaces no Pod; delete its Pods yourself"
    return None


@dataclass(frozen=True)
class Progress:
    done: bool
    message: str  # what it waits for, or what it reached
    failed: bool = False  # it will not finish by waiting (its progress deadline passed)


def progress(kind: str, obj: dict[str, Any], generation: int) -> Progress:
    """How far the rollout of `obj` (as read now) got, for the template of `generation` (the restart's)."""
    name = (obj.get("metadata") or {}).get("name")
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    observed = int(status.get("observedGeneration") or 0)
    generation = max(generation, int((obj.get("metadata") or {}).get("generation") or 0))
    replicas = int(spec.get("replicas", 1))  # the API defaults it to 1
    number = {k: int(v or 0) for k, v in status.items() if isinstance(v, (int, type(None)))}
    if kind == "Deployment":
        if observed < generation:
            return Progress(False, "waiting for the deployment spec update to be observed (status.observedGeneration "
                                   f"{observed}, metadata.generation {generation})")
        for condition in status.get("conditions") or ():
            if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
                return Progress(False, f'deployment "{name}" exceeded its progress deadline', failed=True)
        updated, current, available = (number.get(k, 0) for k in ("updatedReplicas", "replicas", "availableReplicas"))
        if updated < replicas:
            return Progress(False, f"{updated} out of {replicas} new replicas have been updated")
        if current > updated:
            return Progress(False, f"{current - updated} old replicas are pending termination")
        if available < updated:
            return Progress(False, f"{available} of {updated} updated replicas are available")
        return Progress(True, f'deployment "{name}" successfully rolled out')
    if kind == "DaemonSet":
        if observed < generation:
            return Progress(False, "waiting for the daemon set spec update to be observed (status.observedGeneration "
                                   f"{observed}, metadata.generation {generation})")
        updated, desired, available = (number.get(k, 0) for k in
                                       ("updatedNumberScheduled", "desiredNumberScheduled", "numberAvailable"))
        if updated < desired:
            return Progress(False, f"{updated} out of {desired} new pods have been updated")
        if available < desired:
            return Progress(False, f"{available} of {desired} updated pods are available")
        return Progress(True, f'daemon set "{name}" successfully rolled out')
    if kind == "StatefulSet":
        if observed == 0 or observed < generation:
            return Progress(False, "waiting for the statefulset spec update to be observed (status.observedGeneration "
                                   f"{observed}, metadata.generation {generation})")
        ready, updated = number.get("readyReplicas", 0), number.get("updatedReplicas", 0)
        if ready < replicas:
            return Progress(False, f"waiting for {replicas - ready} pods to be ready")
        partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition")
        if partition is not None:
            if updated < replicas - int(partition):
                return Progress(False, f"waiting for partitioned roll out to finish: {updated} out of "
                                       f"{replicas - int(partition)} new pods have been updated")
            return Progress(True, f"partitioned roll out complete: {updated} new pods have been updated")
        if status.get("updateRevision") != status.get("currentRevision"):
            return Progress(False, f"waiting for statefulset rolling update to complete {updated} pods at revision "
                                   f"{status.get('updateRevision')}")
        return Progress(True, f"statefulset rolling update complete {number.get('currentReplicas', 0)} pods at "
                              f"revision {status.get('currentRevision')}")
    raise ValueError(f"no rollout status for a {kind}")
