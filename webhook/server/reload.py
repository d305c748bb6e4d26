"""Configuration hot reload: watches the catalogue directories and the policy file, and swaps in a new Configuration.

A poll compares a cheap fingerprint of the files (no reading); when it changes, the catalogue and the policy
are loaded together (the policy is checked against the catalogue, so a catalogue change can break an
unchanged policy) and the result replaces `holder.current` in one assignment. A load that fails keeps the
configuration being served, is logged once with its problems (file:line) and is counted in /metrics.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Iterable

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


class ConfigurationReloader:
    def __init__(self, holder: ConfigurationHolder, catalogue_dirs: Iterable[str | Path], policy_file: str | Path | None,
                 settings: Settings, interval: float = 1.0, seen: Fingerprint | None = None):
        """`seen`: the fingerprint taken before the first configuration was loaded, so that a change made
        while it was loading is still picked up; taken now when not given."""
        self.holder, self.settings, self.interval = holder, settings, interval
        self.catalogue_dirs, self.policy_file = [str(d) for d in catalogue_dirs], policy_file
        self._seen = fingerprint(self.catalogue_dirs, policy_file) if seen is None else seen
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def load(self) -> Configuration:
        entries = catalogue.load(self.catalogue_dirs)
        return Configuration(entries, self.settings,
                             policy.load(self.policy_file, entries) if self.policy_file else rules.EMPTY)

    def check(self) -> bool | None:
        """Reloads if the files changed: True when a new configuration is served, False when the load failed,
        None when there was nothing (yet) to do."""
        seen = fingerprint(self.catalogue_dirs, self.policy_file)
        if seen == self._seen:
            return None
        try:
            loaded, failure = self.load(), None
        except Exception as err:  # noqa: BLE001 - whatever breaks a load must not end the watch
            loaded, failure = None, err
        if fingerprint(self.catalogue_dirs, self.policy_file) != seen:
            # Written to while it was being read (a file rewritten in place): the next poll reads the result.
            return None
        self._seen = seen
        if failure is not None:
            self._failed(failure)
            return False
        self.holder.current = loaded
        CONFIG_RELOADS.labels("success").inc()
        CONFIG_LAST_SUCCESS.set(1)
        CONFIG_LAST_SUCCESS_TIME.set_to_current_time()
        event(logging.INFO, "configuration reloaded", entries=len(loaded.catalogue.entries),
              rules=len(loaded.policy.rules))
        return True

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
        if self._thread is not None:
            self._thread.join(timeout=5)  # at most the end of a load already under way

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as err:  # noqa: BLE001 - the watch outlives any one poll
                event(logging.ERROR, "configuration reload check failed", error=f"{type(err).__name__}: {err}")
