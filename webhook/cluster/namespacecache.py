"""The Namespace cache: a list+watch of the cluster's Namespaces that the request path reads without a call,
and a bounded lookup of one Namespace the cache has not seen yet.

One daemon thread lists the Namespaces, then watches from the list's resourceVersion: the loop of
webhook.cluster.listwatch (resume, relist on 410 Gone, back off on errors). Each change replaces the whole
snapshot (a dict name -> NamespaceInfo) by one reference assignment, so a hit is a dict read with no lock
and never waits for the API.

A miss (a Namespace created moments ago whose ADDED event has not arrived, a stalled watch, or no list
yet) starts one GET of that Namespace on a small pool of worker threads (one per name at a time, shared
by every review that waits for it) and raises NotCached; the server waits for it within
`lookup_timeout`. What the GET read is cached; the watch keeps it fresh afterwards, and a copy never
replaces a newer one: writers compare resourceVersions (the watch wins when they are not numbers).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Mapping

from webhook.cluster import kubeclient
from webhook.cluster.listwatch import WATCH_SECONDS, Backoff, ListWatch, describe
from webhook.core.engine import NamespaceInfo
from webhook.core.namespaces import NamespaceUnavailable, NotCached
from webhook.logs import event

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# How long a review waits for the lookup of a Namespace the cache has not seen (--namespace-lookup-timeout-seconds).
LOOKUP_TIMEOUT = 2.0
# Lookups of different Namespaces at once; more wait their turn (within their review's timeout).
LOOKUP_WORKERS = 4
NOT_FOUND = 404
# A Namespace name (an RFC 1123 label): anything else cannot exist, and is never put in a URL.
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

__all__ = ["Backoff", "NamespaceCache"]  # Backoff is the loop's, given to the constructor


class NamespaceCache(ListWatch):
    """`Namespaces` from a list+watch, and a lookup on a miss; `start()` it, ask `synced`, `stop()` it."""

    what = "namespace"  # the log says "namespace list/watch failed; retrying", "namespaces listed"

    def __init__(self, api_client: ApiClient, *, lookup_timeout: float = LOOKUP_TIMEOUT,
                 watch_seconds: int = WATCH_SECONDS, backoff: Backoff | None = None):
        if not lookup_timeout > 0:
            raise ValueError(f"lookup_timeout must be more than 0, not {lookup_timeout!r}")
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        super().__init__(self.core.list_namespace, watch_seconds=watch_seconds, backoff=backoff)
        self.lookup_timeout = lookup_timeout
        # Replaced whole, under _writing, by the watch thread and the lookups; read without a lock.
        self._snapshot: Mapping[str, NamespaceInfo] = {}
        self._versions: dict[str, str] = {}  # the resourceVersion of each cached copy
        self._lookups = ThreadPoolExecutor(LOOKUP_WORKERS, thread_name_prefix="namespace-lookup")
        self._pending: dict[str, Future[NamespaceInfo]] = {}
        self._pending_lock = threading.RLock()  # RLock: a future already done runs its callback at once

    # --- the request path

    def lookup(self, name: str) -> NamespaceInfo:
        """The cached Namespace; else raises NotCached with its lookup under way (NamespaceUnavailable for a
        name no Namespace can have). Never blocks."""
        info = self._snapshot.get(name)
        if info is not None:
            return info
        if not NAMESPACE_NAME.fullmatch(name):
            raise NamespaceUnavailable(name, "not an RFC 1123 label", code=400)
        return self._miss(name)

    def _miss(self, name: str) -> NamespaceInfo:
        synced = self.synced
        with self._pending_lock:
            pending = self._pending.get(name)
            if pending is None:
                pending = self._lookups.submit(self._read, name, synced)
                self._pending[name] = pending
                pending.add_done_callback(lambda done: self._forget(name, done))
        raise NotCached(name, pending, self.lookup_timeout, synced)

    def _forget(self, name: str, done: Future[NamespaceInfo]) -> None:
        with self._pending_lock:
            if self._pending.get(name) is done:
                del self._pending[name]

    def _read(self, name: str, synced: bool) -> NamespaceInfo:
        """One GET of the Namespace (a worker thread), cached when found; raises NamespaceUnavailable."""
        started = time.monotonic()
        try:
            found = self.core.read_namespace(name, _request_timeout=self.lookup_timeout)
        except Exception as err:
            status = getattr(err, "status", None)
            event(logging.WARNING, "namespace lookup failed", namespace=name, error=describe(err),
                  seconds=round(time.monotonic() - started, 3))
            raise NamespaceUnavailable(name, _short(err), code=NOT_FOUND if status == NOT_FOUND else 503,
                                       synced=synced) from None
        info = _info(found.metadata)
        kept = self._remember(info, found.metadata.resource_version)
        event(logging.INFO, "namespace looked up", namespace=name, resource_version=found.metadata.resource_version,
              cached=kept, seconds=round(time.monotonic() - started, 3))
        return info

    def _remember(self, info: NamespaceInfo, version: str | None) -> bool:
        """Caches a looked-up copy unless the cache already holds this version or a newer one, or the watch
        has already passed it (the Namespace was deleted since). Whether it was cached."""
        with self._writing:
            if info.name in self._snapshot:
                if not _newer(version, self._versions.get(info.name)):
                    return False  # the watch delivered it meanwhile: the watch wins
            elif _newer(self._resource_version, version) or (version is not None and version == self._resource_version):
                return False  # the watch saw this version and the Namespace is gone since
            self._snapshot = {**self._snapshot, info.name: info}
            self._versions[info.name] = version or ""
            return True

    # --- the loop's part (webhook.cluster.listwatch)

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the thread (ListWatch.stop); lookups not started are cancelled."""
        self._stopping.set()
        self._lookups.shutdown(wait=False, cancel_futures=True)
        super().stop(timeout)

    def _relist(self) -> int:
        listed = self.core.list_namespace(_request_timeout=kubeclient.TIMEOUT)
        version = listed.metadata.resource_version
        snapshot = {ns.metadata.name: _info(ns.metadata) for ns in listed.items or ()}
        versions = {ns.metadata.name: ns.metadata.resource_version or "" for ns in listed.items or ()}
        with self._writing:
            # A copy looked up after the list's version is newer than what the list says; the watch that
            # follows confirms or replaces it.
            for name, info in self._snapshot.items():
                if _newer(self._versions.get(name), version):
                    snapshot[name], versions[name] = info, self._versions[name]
            self._snapshot, self._versions = snapshot, versions
            self._resource_version = version
        return len(snapshot)

    def _apply(self, kind: str, change: dict[str, Any]) -> None:
        meta = change["object"].metadata
        with self._writing:
            # An event older than a copy looked up meanwhile leaves that copy; its own newer event follows.
            if not _newer(self._versions.get(meta.name), meta.resource_version):
                snapshot = dict(self._snapshot)
                if kind == "DELETED":
                    snapshot.pop(meta.name, None)
                    self._versions.pop(meta.name, None)
                else:
                    snapshot[meta.name] = _info(meta)
                    self._versions[meta.name] = meta.resource_version or ""
                self._snapshot = snapshot  # the one write the request path sees
            self._resource_version = meta.resource_version


def _info(meta: Any) -> NamespaceInfo:
    return NamespaceInfo(meta.name, _strings(meta.labels), _strings(meta.annotations))


def _strings(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: v for k, v in (values or {}).items() if isinstance(k, str) and isinstance(v, str)}


def _newer(version: str | None, than: str | None) -> bool:
    """Whether resourceVersion `version` is later than `than`: only when both are numbers (etcd revisions, as
    every apiserver has them); otherwise nothing is known to be newer, and the watch wins."""
    if not version or not than or not version.isdigit() or not than.isdigit():
        return False
    return int(version) > int(than)


def _short(err: Exception) -> str:
    """The reason a lookup failed, short enough for the message the user sees (no URL, no object address)."""
    status = getattr(err, "status", None)
    if status is not None:
        return f"HTTP {status} {getattr(err, 'reason', '') or ''}".strip()
    cause = getattr(err, "reason", None)  # urllib3's MaxRetryError carries the error of the last try
    if isinstance(cause, Exception):
        err = cause
    return f"{type(err).__name__}: {str(err).rsplit(': ', 1)[-1]}"[:160]
