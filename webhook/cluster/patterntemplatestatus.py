"""The status of each PatternTemplate: whether the server serves it (Ready), the digest and lifecycle it serves, written
back through the status subresource only when it changes.

After every rebuild of the catalogue with the cluster's objects, `offer` works out each object's status from what the
rebuild came to and hands it to a thread of its own, which writes it (a merge patch of /status) unless the object
already says exactly that, and tries again with a backoff when the API fails. Several replicas compute the same
status from the same objects and so skip each other's writes; `lastTransitionTime` moves only when Ready flips.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from webhook.catalog import catalogue, policy
from webhook.catalog.definition import GROUP, PLURAL, VERSION
from webhook.cluster import kubeclient
from webhook.cluster.listwatch import Backoff, describe
from webhook.core.entries import Catalogue, Entry
from webhook.logs import bounded, event

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

READY = "Ready"
SERVED, INVALID, NOT_SERVED = "Served", "Invalid", "NotServed"
MAX_MESSAGE = 2000  # a condition message stays readable in `kubectl describe`
MAX_LISTED_PROBLEMS = 5
NOT_FOUND = 404
FIELDS = ("observedGeneration", "digest", "lifecycle", "origin", "conditions")  # the status fields the server owns

Objects = Mapping[str, Mapping[str, Any]]
Status = dict[str, Any]


def statuses(objects: Objects, served: Catalogue, failure: Exception | None, native_sidecars: bool) -> dict[str, Status]:
    """Each object's status after a rebuild from `objects` (lastTransitionTime left out): `served` is the catalogue
    served since (the new one, or the last good one when `failure` refused the new one)."""
    return {name: _status(name, obj, served, failure, native_sidecars) for name, obj in objects.items()}


def _status(name: str, obj: Mapping[str, Any], served: Catalogue, failure: Exception | None,
            native_sidecars: bool) -> Status:
    generation = (obj.get("metadata") or {}).get("generation")
    entry = served.entries.get(name)
    # Served from this object (this spec or an older one), or from a built-in or a directory, or not at all.
    mine = entry if entry is not None and entry.origin.startswith(f"{catalogue.OBJECT_PREFIX}{name}:") else None
    own, problems = (mine, []) if failure is None else _alone(name, obj)
    if problems:
        reason, message = INVALID, _join(str(p) for p in problems)
    elif mine is not None and own is not None and own.digest == mine.digest:
        reason, message = SERVED, f"served as catalogue entry {name}"
    else:
        reason, message = NOT_SERVED, _not_served(failure, mine, entry)
    status: Status = {"observedGeneration": generation} if generation is not None else {}
    if mine is not None:
        status["digest"] = mine.digest
        status["lifecycle"] = _lifecycle(mine, native_sidecars)
    if entry is not None:
        status["origin"] = entry.origin
    condition = {"type": READY, "status": "True" if reason == SERVED else "False", "reason": reason,
                 "message": bounded(message, MAX_MESSAGE)}
    if generation is not None:
        condition["observedGeneration"] = generation
    status["conditions"] = [condition]
    return status


def _alone(name: str, obj: Mapping[str, Any]) -> tuple[Entry | None, list[Any]]:
    """The object loaded by itself: its entry, or its own problems (the rebuild failed, maybe for another reason)."""
    try:
        [entry] = catalogue.load_text(catalogue.object_text(obj), f"{catalogue.OBJECT_PREFIX}{name}")
    except catalogue.CatalogueError as err:
        return None, err.problems
    return entry, []


def _not_served(failure: Exception | None, mine: Entry | None, entry: Entry | None) -> str:
    if failure is None:  # cannot happen while objects are keyed by their names; said plainly if it does
        return "not served: the catalogue has no entry from this object"
    if isinstance(failure, (catalogue.CatalogueError, policy.PolicyError)):
        problems = [str(p) for p in failure.problems]
        more = len(problems) - MAX_LISTED_PROBLEMS
        why = _join(problems[:MAX_LISTED_PROBLEMS]) + (f" (and {more} more)" if more > 0 else "")
    else:
        why = f"{type(failure).__name__}: {failure}"
    what = "the catalogue" if not isinstance(failure, policy.PolicyError) else "the policy"
    if mine is not None:
        kept = f"this entry's previous spec ({mine.digest}) is served"
    elif entry is not None:
        kept = f"the entry of this name from {entry.origin} is served"
    else:
        kept = "Pods that ask for this entry are refused"
    return f"not served: the catalogue with this spec was refused, {what} does not load: {why}; the last good " \
           f"catalogue stays, and {kept}"


def _lifecycle(entry: Entry, native_sidecars: bool) -> str:
    """How its containers run in this cluster (lifecycle auto: native where the cluster has native sidecars)."""
    if entry.lifecycle == "auto":
        return "native" if native_sidecars else "regular"
    return entry.lifecycle


def _join(messages: Any) -> str:
    return "; ".join(messages)


def with_times(status: Status, before: Mapping[str, Any] | None, now: str) -> Status:
    """`status` with each condition's lastTransitionTime: kept from `before` when the condition's status is the
    same, `now` when it flipped or is new."""
    previous = {c.get("type"): c for c in (before or {}).get("conditions") or () if isinstance(c, dict)}
    conditions = []
    for condition in status["conditions"]:
        old = previous.get(condition["type"])
        kept = old.get("lastTransitionTime") if old and old.get("status") == condition["status"] else None
        conditions.append({**condition, "lastTransitionTime": kept or now})
    return {**status, "conditions": conditions}


class StatusWriter:
    """Writes the statuses of the last rebuild on a thread of its own; `current()` gives the objects as the watch
    has them now, to compare with. `start()`, `offer(…)` after each rebuild, `stop()`."""

    def __init__(self, api_client: ApiClient, current: Callable[[], Objects], backoff: Backoff | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.current = current
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._pending: dict[str, tuple[Any, Status]] = {}  # name -> (the object's uid, its status): still to write
        self._written: dict[str, Mapping[str, Any]] = {}  # name -> the object as the last write returned it
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="patterntemplate-status", daemon=True)

    def offer(self, objects: Objects, served: Catalogue, failure: Exception | None, native_sidecars: bool) -> None:
        """The statuses after a rebuild from `objects`: they replace any not written yet."""
        wanted = statuses(objects, served, failure, native_sidecars)
        with self._lock:
            self._pending = {name: ((objects[name].get("metadata") or {}).get("uid"), status)
                             for name, status in wanted.items()}
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        pause: float | None = None
        while not self._stopping.is_set():
            self._wake.wait(pause)
            self._wake.clear()
            if self._stopping.is_set():
                break
            with self._lock:
                batch = dict(self._pending)
            try:
                for name, wanted in batch.items():
                    self._write(name, *wanted)
                    with self._lock:
                        if self._pending.get(name) is wanted:  # not replaced by a newer offer meanwhile
                            del self._pending[name]
            except Exception as err:  # noqa: BLE001 - the API failed: this write and the rest wait for the next try
                pause = self.backoff.next()
                event(logging.WARNING, "patterntemplate status not written; retrying", error=describe(err),
                      retry_in=pause)
            else:
                pause = None
                self.backoff.reset()

    def _write(self, name: str, uid: Any, status: Status) -> None:
        stored = self._stored(name)
        if stored is None or (stored.get("metadata") or {}).get("uid") != uid:
            return  # deleted, or replaced by a new object of that name: its own rebuild follows
        if (stored.get("metadata") or {}).get("generation") != status.get("observedGeneration"):
            return  # changed since: the rebuild of its new spec follows, with its own status
        before = stored.get("status") if isinstance(stored.get("status"), dict) else {}
        wanted = with_times(status, before, self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"))
        if {k: v for k, v in before.items() if k in FIELDS} == wanted:
            return  # already so: written by this replica before, or by another one
        # A merge patch: fields the status no longer has are removed with null.
        patch = {"status": {**{field: None for field in FIELDS if field in before}, **wanted}}
        try:
            written = self.custom.patch_cluster_custom_object_status(GROUP, VERSION, PLURAL, name, patch,
                                                                     _request_timeout=kubeclient.TIMEOUT)
        except Exception as err:
            if getattr(err, "status", None) == NOT_FOUND:
                return  # deleted meanwhile
            raise
        self._written[name] = written
        ready = wanted["conditions"][0]
        event(logging.INFO, "patterntemplate status written", patterntemplate=name, ready=ready["status"],
              reason=ready["reason"], digest=wanted.get("digest"), generation=wanted.get("observedGeneration"))

    def _stored(self, name: str) -> Mapping[str, Any] | None:
        """The object as the watch has it, or as this writer's last write returned it when that is newer (the watch
        has not delivered the write yet)."""
        watched = self.current().get(name)
        written = self._written.get(name)
        if watched is None or written is None:
            return watched
        if _version(written) > _version(watched):
            return written
        return watched


def _version(obj: Mapping[str, Any]) -> int:
    version = (obj.get("metadata") or {}).get("resourceVersion") or ""
    return int(version) if version.isdigit() else -1
