"""The inventory of injected Pods: what each one carries, grouped by the workload that owns it, stale or current."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import orjson

from webhook.core.audit import audit
from webhook.core.configuration import Configuration
from webhook.core.engine import NamespaceInfo
from webhook.core.pod import PodShapeError, read_pod
from webhook.core.verify import find_container

CURRENT, STALE = "current", "stale"
FORGED, UNKNOWN, MISSING, UNREADABLE = "forged", "unknown-entry", "missing-entry", "unreadable-status"
FLAGGED = (FORGED, UNKNOWN, MISSING, UNREADABLE)
STATES = (CURRENT, STALE, *FLAGGED)


@dataclass(frozen=True, order=True)
class Workload:
    """What owns a Pod, as a person names it: its Deployment rather than its ReplicaSet, its CronJob rather than
    its Job; the Pod itself when nothing does."""

    namespace: str
    kind: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


def controller(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the object's controller ownerReference, the one that creates and deletes it."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller") is True and ref.get("kind") and ref.get("name"):
            return str(ref["kind"]), str(ref["name"])
    return None


@dataclass(frozen=True)
class Record:
    """One entry of one Pod: what its status annotation says, and what that is worth."""

    entry: str
    pattern: str
    digest: str  # as injected; "" for an entry the Pod lacks
    state: str
    current: str  # the catalogue's digest now; "" for an entry it no longer has
    message: str = ""  # why, for a flagged state


@dataclass(frozen=True)
class PodState:
    namespace: str
    name: str
    workload: Workload
    records: tuple[Record, ...]

    @property
    def stale(self) -> bool:
        return any(r.state == STALE for r in self.records)

    @property
    def flagged(self) -> bool:
        return any(r.state in FLAGGED for r in self.records)


def pod_state(pod: dict[str, Any], workload: Workload, configuration: Configuration,
              namespace: NamespaceInfo | None = None) -> PodState | None:
    """The Pod's entries judged against the configuration, or None for a Pod that carries none and lacks none.
    With `namespace`, a Pod that a mandatory rule selects is checked for the rule's entries."""
    meta = pod.get("metadata") or {}
    catalogue, keys = configuration.catalogue, configuration.settings.keys
    records: list[Record] = []
    try:
        view = read_pod(pod)
    except PodShapeError as err:  # the API serves only Pods; a stand-in or a proxy might not
        return PodState(workload.namespace, str(meta.get("name") or ""), workload,
                        (Record("", "", "", UNREADABLE, "", f"not a readable Pod: {err}"),))
    text = view.annotations.get(keys.status)
    claims = _claims(text) if text is not None else []
    if claims is None:
        records.append(Record("", "", "", UNREADABLE, "",
                              f"annotation {keys.status} is not a JSON list of entry records: {_short(text or '')}"))
        claims = []
    for claim in claims:
        name, digest = claim["entry"], claim["digest"]
        entry = catalogue.entries.get(name)
        if entry is None:
            records.append(Record(name, claim["pattern"], digest, UNKNOWN, "",
                                  f"annotation {keys.status} lists {name}, which the catalogue no longer has"))
            continue
        # An entry's container names are fixed in its template: a claim without them is forged or stripped.
        absent = [c["name"] for c in entry.containers if find_container(view, c["name"]) is None]
        if absent:
            records.append(Record(name, claim["pattern"], digest, FORGED, entry.digest,
                                  f"annotation {keys.status} lists {name}, but the Pod has no container "
                                  f"{', '.join(absent)}"))
        else:
            records.append(Record(name, claim["pattern"], digest, CURRENT if digest == entry.digest else STALE,
                                  entry.digest))
    if namespace is not None:
        claimed = {r.entry: i for i, r in enumerate(records)}
        for finding in audit(pod, configuration, namespace):
            if finding.kind != "missing-entry" or not finding.mandatory:
                continue
            for name in finding.entries:
                if name not in claimed:
                    entry = catalogue.entries.get(name)
                    records.append(Record(name, entry.pattern if entry else "", "", MISSING,
                                          entry.digest if entry else "", finding.message))
                elif records[claimed[name]].state == CURRENT:
                    # Claimed at the current digest, named containers present, yet not what the entry injects: a
                    # look-alike. (A stale claim differs from the current rendering as a matter of course.)
                    records[claimed[name]] = replace(records[claimed[name]], state=FORGED, message=finding.message)
    if not records:
        return None
    return PodState(workload.namespace, view.name, workload, tuple(records))


def _claims(text: str) -> list[dict[str, str]] | None:
    """The records of a status annotation, or None when it is not a list of them (the webhook denies such a Pod
    at admission; one admitted while the webhook was down can still carry it)."""
    try:
        records = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(records, list) or not all(isinstance(r, dict) and isinstance(r.get("entry"), str) for r in records):
        return None
    return [{"entry": r["entry"], "pattern": str(r.get("pattern") or ""), "digest": str(r.get("digest") or "")}
            for r in records]


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


@dataclass(frozen=True)
class Row:
    """Pods of one workload that share an entry, its digest and their state."""

    entry: str
    pattern: str
    digest: str
    state: str
    current: str
    pods: int


@dataclass(frozen=True)
class Group:
    workload: Workload
    pods: tuple[PodState, ...]

    @property
    def stale(self) -> int:
        return sum(p.stale for p in self.pods)

    @property
    def flagged(self) -> int:
        return sum(p.flagged for p in self.pods)

    def rows(self) -> list[Row]:
        counts = Counter((r.entry, r.pattern, r.digest, r.state, r.current) for p in self.pods for r in p.records)
        # A workload's entries in the order its Pods list them; the stale digest before the current one.
        order = {name: i for i, name in enumerate(dict.fromkeys(r.entry for p in self.pods for r in p.records))}
        return [Row(*key, pods) for key, pods in
                sorted(counts.items(), key=lambda kv: (order[kv[0][0]], STATES.index(kv[0][3]), kv[0][2]))]

    def problems(self) -> list[tuple[PodState, Record]]:
        return [(p, r) for p in sorted(self.pods, key=lambda p: p.name) for r in p.records if r.state in FLAGGED]


@dataclass(frozen=True)
class Inventory:
    groups: tuple[Group, ...] = field(default_factory=tuple)

    @property
    def wrong(self) -> bool:
        """Something to act on: a stale Pod, or a flagged one."""
        return any(g.stale or g.flagged for g in self.groups)

    def only_stale(self) -> Inventory:
        return Inventory(tuple(g for g in self.groups if g.stale))

    def as_dict(self) -> dict[str, Any]:
        """The structure of `status -o json|yaml` (README, `podpatterns status`)."""
        return {
            "workloads": [{
                "namespace": g.workload.namespace,
                "kind": g.workload.kind,
                "name": g.workload.name,
                "pods": len(g.pods),
                "stalePods": g.stale,
                "flaggedPods": g.flagged,
                "entries": [{"entry": r.entry, "pattern": r.pattern, "digest": r.digest, "state": r.state,
                             "currentDigest": r.current, "pods": r.pods} for r in g.rows()],
                "problems": [{"pod": p.name, "entry": r.entry, "state": r.state, "message": r.message}
                             for p, r in g.problems()],
            } for g in self.groups],
            "summary": {"workloads": len(self.groups), "pods": sum(len(g.pods) for g in self.groups),
                        "stalePods": sum(g.stale for g in self.groups),
                        "flaggedPods": sum(g.flagged for g in self.groups)},
        }


def take(pods: Iterable[tuple[dict[str, Any], Workload]], configuration: Configuration,
         namespaces: Mapping[str, NamespaceInfo] | None = None) -> Inventory:
    """The Pods that carry or lack entries, grouped by workload in (namespace, kind, name) order. A Pod whose
    Namespace is in `namespaces` is checked against the mandatory rules; None checks none."""
    grouped: dict[Workload, list[PodState]] = {}
    for pod, workload in pods:
        namespace = namespaces.get(workload.namespace) if namespaces is not None else None
        state = pod_state(pod, workload, configuration, namespace)
        if state is not None:
            grouped.setdefault(workload, []).append(state)
    return Inventory(tuple(Group(w, tuple(grouped[w])) for w in sorted(grouped)))
