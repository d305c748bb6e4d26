"""Configuration hot reload: watches the catalogue directories and the policy file, and swaps in a new Configuration.

A poll compares a cheap fingerprint of the files (no reading); when it changes, the catalogue and the policy
are loaded together (the policy is checked against the catalogue, so a catalogue change can break an
unchanged policy) and the result replaces `holder.current` in one assignment. A load that fails keeps the
configuration being served, is logged once with its problems (file:line) and is counted in /metrics.

The cluster's PatternTemplates are a third source (`objects_changed`, from their watch): a change wakes the same
thread, which rebuilds from built-ins < directories < objects, so file and object changes never race. After each
rebuild with objects, `on_rebuilt` hears what it came to (their status is written from it).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from webhook.catalog import catalogue, policy
from webhook.core import rules
from webhook.core.configuration import Configuration, ConfigurationHolder
from webhook.core.engine import Settings
from webhook.logs import bounded, event
from webhook.server.metrics import (
    CONFIG_LAST_SUCCESS,
    CONFIG_LAST_SUCCESS_TIME,
    CONFIG_RELOADS,
)

MAX_LOGGED_PROBLEMS = 20
MAX_PROBLEM_TEXT = 1000  # a long path and the allowed values still fit

Fingerprint = tuple[tuple[object, ...], ...]
Objects = Mapping[str, Mapping[str, Any]]  # PatternTemplate objects by name, as the API returns them


def fingerprint(catalogue_dirs: Iterable[str | Path], policy_file: str | Path | None) -> Fingerprint:
    """What each watched file is now: its resolved target and stat, or why it cannot be stat'ed."""
    marks = []
    for directory in map(str, catalogue_dirs):
        marks.append(_mark(directory))
        try:
            names = sorted(os.listdir(directory))
        except OSError as err:
            marks.append((directory, "cannot list", err.errno))
            continue
        # Dot names are the kubelet's ..data and ..<timestamp> entries: the visible names resolve through them.
        marks.extend(_mark(os.path.join(directory, name)) for name in names if not name.startswith("."))
    if policy_file:
        marks.append(_mark(str(policy_file)))
    return tuple(marks)


def _mark(path: str) -> tuple[object, ...]:
    try:
        stat = os.stat(path)  # follows symlinks: a swapped ..data link gives a new inode and target
    except OSError as err:
        return (path, "missing", err.errno)
    return (path, os.path.realpath(path), stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)


def load(catalogue_dirs: Iterable[str | Path], policy_file: str | Path | None, settings: Settings,
         objects: Objects | None = None) -> Configuration:
    """The catalogue (built-ins < directories < objects) and the policy checked against it; raises CatalogueError or
    PolicyError."""
    entries = catalogue.merge(catalogue_dirs, objects)
    return Configuration(entries, settings, policy.load(policy_file, entries) if policy_file else rules.EMPTY)


class ConfigurationReloader:
    def __init__(self, holder: ConfigurationHolder, catalogue_dirs: Iterable[str | Path], policy_file: str | Path | None,
                 settings: Settings, interval: float = 1.0, seen: Fingerprint | None = None):
        """`seen`: the fingerprint taken before the first configuration was loaded, so that a change made
        while it was loading is still picked up; taken now when not given. `interval` 0: the files are not
        polled (with the objects watched, they are read again when the objects change)."""
        self.holder, self.settings, self.interval = holder, settings, interval
        self.catalogue_dirs, self.policy_file = [str(d) for d in catalogue_dirs], policy_file
        self._seen = fingerprint(self.catalogue_dirs, policy_file) if seen is None else seen
        self._stop = threading.Event()
        self._wake = threading.Event()  # objects_changed and stop: the thread does not wait out its poll
        self._thread: threading.Thread | None = None
        # None until the watch's first answer: the configuration being served was built without the cluster.
        self._objects: Objects | None = None
        self._built: Objects | None = None  # the objects the last rebuild read (by identity: the watch replaces them whole)
        self.on_rebuilt: Callable[[Objects, Configuration, Exception | None], None] | None = None
        self.objects_built = threading.Event()  # a rebuild has read the watch's first answer

    def objects_changed(self, objects: Objects) -> None:
        """The cluster's PatternTemplates are now `objects` (called on the watch's thread; rebuilt on this one)."""
        self._objects = objects
        self._wake.set()

    def load(self, objects: Objects | None = None) -> Configuration:
        return load(self.catalogue_dirs, self.policy_file, self.settings, objects)

    def check(self) -> bool | None:
        """Reloads if the files or the objects changed: True when a new configuration is served, False when the
        load failed, None when there was nothing (yet) to do."""
        seen = fingerprint(self.catalogue_dirs, self.policy_file)
        objects = self._objects  # read once: the set this rebuild is made of
        if seen == self._seen and objects is self._built:
            return None
        try:
            loaded, failure = self.load(objects), None
        except Exception as err:  # noqa: BLE001 - whatever breaks a load must not end the watch
            loaded, failure = None, err
        if fingerprint(self.catalogue_dirs, self.policy_file) != seen:
            # Written to while it was being read (a file rewritten in place): the next poll reads the result; without
            # polls (only the objects watched), a check at once.
            if self.interval <= 0:
                self._wake.set()
            return None
        self._seen, self._built = seen, objects
        if failure is not None:
            self._failed(failure)
            self._rebuilt(objects, failure)
            return False
        self.holder.current = loaded
        CONFIG_RELOADS.labels("success").inc()
        CONFIG_LAST_SUCCESS.set(1)
        CONFIG_LAST_SUCCESS_TIME.set_to_current_time()
        event(logging.INFO, "configuration reloaded", entries=len(loaded.catalogue.entries),
              rules=len(loaded.policy.rules), **({} if objects is None else {"patterntemplates": len(objects)}))
        self._rebuilt(objects, None)
        return True

    def _rebuilt(self, objects: Objects | None, failure: Exception | None) -> None:
        if objects is None:
            return
        self.objects_built.set()
        if self.on_rebuilt is not None:
            try:
                self.on_rebuilt(objects, self.holder.current, failure)
            except Exception as err:  # noqa: BLE001 - the status is a report: it must not stop the reloads
                event(logging.ERROR, "patterntemplate status not updated", error=f"{type(err).__name__}: {err}")

    def _failed(self, err: Exception) -> None:
        CONFIG_RELOADS.labels("failure").inc()
        CONFIG_LAST_SUCCESS.set(0)
        if isinstance(err, (catalogue.CatalogueError, policy.PolicyError)):
            what = "catalogue" if isinstance(err, catalogue.CatalogueError) else "policy"
            problems = [bounded(str(p), MAX_PROBLEM_TEXT) for p in err.problems]
        else:
            what, problems = "configuration", [bounded(f"{type(err).__name__}: {err}", MAX_PROBLEM_TEXT)]
        event(logging.ERROR, f"reload refused: the {what} does not load; serving the last good configuration",
              problems=problems[:MAX_LOGGED_PROBLEMS], problem_count=len(problems))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="configuration-reloader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # at most the end of a load already under way

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval if self.interval > 0 else None)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.check()
            except Exception as err:  # noqa: BLE001 - the watch outlives any one poll
                event(logging.ERROR, "configuration reload check failed", error=f"{type(err).__name__}: {err}")
