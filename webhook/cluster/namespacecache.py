"""The Namespace cache: a list+watch of the cluster's Namespaces that the request path reads without a call.

One daemon thread lists the Namespaces, then watches from the list's resourceVersion. Each event
replaces the whole snapshot (a dict name -> NamespaceInfo) by one reference assignment, so a lookup
is a dict read with no lock and never waits for the API. A watch resumes from the last resourceVersion
seen (bookmarks included); 410 Gone means that version is compacted away, so the cache relists; any
other failure waits an exponential backoff and resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from webhook.cluster import kubeclient
from webhook.core.engine import NamespaceInfo
from webhook.core.namespaces import NotSynced
from webhook.logs import event

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

UNSYNCED_MODES = ("fail", "skip")
# The apiserver ends each watch after this long and the cache opens a new one: a connection a proxy
# silently dropped is noticed at the latest then (client-go picks 5 to 10 minutes).
WATCH_SECONDS = 300
# A watch that ends sooner than this with no event counts as a failure: a proxy that closes every
# watch at once must not be asked again in a tight loop.
MIN_WATCH_SECONDS = 1.0
GONE = 410


class Gone(Exception):
    """The resourceVersion to resume from is compacted away: only a new list can continue."""


@dataclass
class Backoff:
    """Exponential waits between failed tries: initial, twice that, … up to cap; reset by progress."""

    initial: float = 0.5
    cap: float = 30.0
    failures: int = 0  # in a row, since the watch last made progress

    def next(self, first_free: bool = False) -> float:
        """The wait after one more failure (none for the first in a row when `first_free`)."""
        self.failures += 1
        if first_free and self.failures == 1:
            return 0.0
        return min(self.cap, self.initial * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


class NamespaceCache:
    """`Namespaces` from a list+watch; `start()` it, ask `synced`, `stop()` it."""

    def __init__(self, api_client: ApiClient, unsynced: str = "fail", *, watch_seconds: int = WATCH_SECONDS,
                 backoff: Backoff | None = None):
        if unsynced not in UNSYNCED_MODES:
            raise ValueError(f"unsynced must be one of {', '.join(UNSYNCED_MODES)}, not {unsynced!r}")
        from kubernetes import client, watch

        self.core = client.CoreV1Api(api_client)
        self.unsynced = unsynced
        self.watch_seconds = watch_seconds
        self.backoff = backoff or Backoff()
        self.watch = watch.Watch()
        # None until the first list: the request path tells "never synced" from "unknown namespace" by it.
        self._snapshot: Mapping[str, NamespaceInfo] | None = None
        self._resource_version: str | None = None  # None: the next step is a (re)list
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="namespace-cache", daemon=True)

    # --- the request path

    def lookup(self, name: str) -> NamespaceInfo:
        snapshot = self._snapshot
        if snapshot is None:
            if self.unsynced == "fail":
                raise NotSynced
            return NamespaceInfo(name)
        return snapshot.get(name) or NamespaceInfo(name)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    # --- the thread

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the thread: a blocked watch read is cut by shutting its socket, repeatedly, since the
        thread may be between opening a watch and reading it."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self.watch.stop()
            self._thread.join(0.1)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    self._list()
                self._watch()
            except Gone:
                self._resource_version = None
                # The usual 410 (a watch resumed after a compaction) relists at once; one after another
                # failure waits, so a server that answers every watch with 410 is not listed in a tight loop.
                pause = self.backoff.next(first_free=True)
                event(logging.INFO, "namespace watch expired (410 Gone); relisting", retry_in=pause)
                self._stopping.wait(pause)
            except Exception as err:  # never dies: a dropped connection, a 5xx, an unreadable answer…
                if self._stopping.is_set():
                    break
                pause = self.backoff.next()
                event(logging.WARNING, "namespace list/watch failed; retrying", error=_describe(err),
                      resource_version=self._resource_version, retry_in=pause)
                self._stopping.wait(pause)

    def _list(self) -> None:
        listed = self.core.list_namespace(_request_timeout=kubeclient.TIMEOUT)
        self._snapshot = {ns.metadata.name: _info(ns.metadata) for ns in listed.items or ()}
        self._resource_version = listed.metadata.resource_version
        first = not self._synced.is_set()
        self._synced.set()
        event(logging.INFO, "namespaces listed" if first else "namespaces relisted",
              namespaces=len(self._snapshot), resource_version=self._resource_version)

    def _watch(self) -> None:
        """One watch connection, until the server ends it (its timeout) or it fails."""
        # A read timeout past the server's own: a connection that went silently dead ends too.
        timeouts = (kubeclient.TIMEOUT[0], self.watch_seconds + kubeclient.TIMEOUT[1])
        opened, events = time.monotonic(), 0
        try:
            for change in self.watch.stream(self.core.list_namespace, resource_version=self._resource_version,
                                            allow_watch_bookmarks=True, timeout_seconds=self.watch_seconds,
                                            _request_timeout=timeouts):
                if self._stopping.is_set():
                    return
                self._apply(change)
                events += 1
                self.backoff.reset()
        except Exception as err:
            if getattr(err, "status", None) == GONE:  # an HTTP 410, or the client's exception for an ERROR event
                raise Gone from err
            raise
        if not events and time.monotonic() - opened < MIN_WATCH_SECONDS and not self._stopping.is_set():
            raise ConnectionError("the watch ended at once, with no event")
        self.backoff.reset()  # the server ended the watch at its timeout

    def _apply(self, change: dict[str, Any] | None) -> None:
        if not isinstance(change, dict):  # the client yields None for a line that is not JSON
            raise ValueError("a watch event that is not JSON")
        kind, raw = change.get("type"), change.get("raw_object")
        if kind == "ERROR":  # the client raises for these itself; kept in case it stops doing so
            raise Gone if isinstance(raw, dict) and raw.get("code") == GONE else ValueError(f"watch error: {raw}")
        if kind == "BOOKMARK":  # only a resourceVersion to resume from
            self._resource_version = raw["metadata"]["resourceVersion"]
            return
        meta = change["object"].metadata
        snapshot = dict(self._snapshot or {})
        if kind in ("ADDED", "MODIFIED"):
            snapshot[meta.name] = _info(meta)
        elif kind == "DELETED":
            snapshot.pop(meta.name, None)
        else:
            raise ValueError(f"unknown watch event type {kind!r}")
        self._snapshot = snapshot  # the one write the request path sees
        self._resource_version = meta.resource_version


def _info(meta: Any) -> NamespaceInfo:
    return NamespaceInfo(meta.name, _strings(meta.labels), _strings(meta.annotations))


def _strings(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: v for k, v in (values or {}).items() if isinstance(k, str) and isinstance(v, str)}


def _describe(err: Exception) -> str:
    """The error without the response body and headers an ApiException carries."""
    status = getattr(err, "status", None)
    if status is not None:
        return f"{type(err).__name__}: HTTP {status} {getattr(err, 'reason', '')}".strip()
    return f"{type(err).__name__}: {err}"
