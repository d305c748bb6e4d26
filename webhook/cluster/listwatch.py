"""The list+watch loop: one daemon thread that lists a collection, then watches it, resuming and relisting as needed.

It lists, then watches from the list's resourceVersion (bookmarks on, each watch renewed after `watch_seconds`). A
watch resumes from the last resourceVersion seen; 410 Gone means that version is compacted away, so it relists; any
other failure waits an exponential backoff and resumes. What a list and an event do to the state is the subclass's
(the Namespace cache, the PatternTemplate watch).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from webhook.cluster import kubeclient
from webhook.logs import event

# The apiserver ends each watch after this long and a new one is opened: a connection a proxy silently dropped is
# noticed at the latest then (client-go picks 5 to 10 minutes).
WATCH_SECONDS = 300
# A watch that ends sooner than this with no event counts as a failure: a proxy that closes every watch at once must
# not be asked again in a tight loop.
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


class ListWatch:
    """Keeps a list+watch of one collection going on a thread; `start()`, ask `synced`, `stop()`.

    A subclass sets `what` (names the collection in the log) and implements `_relist` (one list call that replaces
    the state and `_resource_version` under `_writing`; returns how many objects) and `_apply` (one ADDED, MODIFIED
    or DELETED event)."""

    what = "object"

    def __init__(self, lister: Callable[..., Any], *, watch_seconds: int = WATCH_SECONDS, backoff: Backoff | None = None):
        """`lister`: the client's list call of the collection (`watch.stream` calls it with watch=True)."""
        from kubernetes import watch

        self.lister = lister
        self.watch_seconds = watch_seconds
        self.backoff = backoff or Backoff()
        self.watch = watch.Watch()
        self._writing = threading.Lock()  # the state and _resource_version change together under it
        self._resource_version: str | None = None  # None: the next step is a (re)list
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.what}-watch", daemon=True)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the thread: a blocked watch read is cut by shutting its socket, repeatedly, since the thread may be
        between opening a watch and reading it."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self.watch.stop()
            self._thread.join(0.1)

    # --- the subclass's part

    def _relist(self) -> int:
        raise NotImplementedError

    def _apply(self, kind: str, change: dict[str, Any]) -> None:
        raise NotImplementedError

    def _failed(self, err: Exception, pause: float) -> None:
        """Says that a list or watch failed and is retried after `pause` seconds."""
        event(logging.WARNING, f"{self.what} list/watch failed; retrying", error=describe(err),
              resource_version=self._resource_version, retry_in=pause)

    # --- the thread

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._resource_version is None:
                    self._list()
                self._watch()
            except Gone:
                self._resource_version = None
                # The usual 410 (a watch resumed after a compaction) relists at once; one after another failure
                # waits, so a server that answers every watch with 410 is not listed in a tight loop.
                pause = self.backoff.next(first_free=True)
                event(logging.INFO, f"{self.what} watch expired (410 Gone); relisting", retry_in=pause)
                self._stopping.wait(pause)
            except Exception as err:  # never dies: a dropped connection, a 5xx, an unreadable answer…
                if self._stopping.is_set():
                    break
                pause = self.backoff.next()
                self._failed(err, pause)
                self._stopping.wait(pause)

    def _list(self) -> None:
        count = self._relist()
        first = not self._synced.is_set()
        self._synced.set()
        event(logging.INFO, f"{self.what}s listed" if first else f"{self.what}s relisted",
              **{f"{self.what}s": count}, resource_version=self._resource_version)

    def _watch(self) -> None:
        """One watch connection, until the server ends it (its timeout) or it fails."""
        # A read timeout past the server's own: a connection that went silently dead ends too.
        timeouts = (kubeclient.TIMEOUT[0], self.watch_seconds + kubeclient.TIMEOUT[1])
        opened, events = time.monotonic(), 0
        try:
            for change in self.watch.stream(self.lister, resource_version=self._resource_version,
                                            allow_watch_bookmarks=True, timeout_seconds=self.watch_seconds,
                                            _request_timeout=timeouts):
                if self._stopping.is_set():
                    return
                self._event(change)
                events += 1
                self.backoff.reset()
        except Exception as err:
            if getattr(err, "status", None) == GONE:  # an HTTP 410, or the client's exception for an ERROR event
                raise Gone from err
            raise
        if not events and time.monotonic() - opened < MIN_WATCH_SECONDS and not self._stopping.is_set():
            raise ConnectionError("the watch ended at once, with no event")
        self.backoff.reset()  # the server ended the watch at its timeout

    def _event(self, change: dict[str, Any] | None) -> None:
        if not isinstance(change, dict):  # the client yields None for a line that is not JSON
            raise ValueError("a watch event that is not JSON")
        kind, raw = change.get("type"), change.get("raw_object")
        if kind == "ERROR":  # the client raises for these itself; kept in case it stops doing so
            raise Gone if isinstance(raw, dict) and raw.get("code") == GONE else ValueError(f"watch error: {raw}")
        if kind == "BOOKMARK":  # only a resourceVersion to resume from
            with self._writing:
                self._resource_version = raw["metadata"]["resourceVersion"]
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {kind!r}")
        self._apply(kind, change)


def describe(err: Exception) -> str:
    """The error without the response body and headers an ApiException carries."""
    status = getattr(err, "status", None)
    if status is not None:
        return f"{type(err).__name__}: HTTP {status} {getattr(err, 'reason', '')}".strip()
    return f"{type(err).__name__}: {err}"
