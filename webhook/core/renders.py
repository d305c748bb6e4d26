"""Rendered catalogue entries, kept per entry for the placeholder values Pods actually use.

Rendering the templates was the largest cost of a request for a small Pod, and a cluster repeats a
handful of parameter combinations (its namespaces, its environments). So each entry keeps its last
renders, keyed by the values of the placeholders *it uses* (a Pod's name is part of the key only for
an entry that says `${pod.name}`) and by its lifecycle as decided for this cluster. The key never holds
anything else of the request. The cache belongs to the Entry, so a reloaded catalogue starts empty.

Renders are shared between requests: like `template.render`'s results they are read-only (the
encoder serializes them; the CLI deep-copies before applying a patch; limits.apply copies a container
before setting its resources).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from webhook.core.images import with_registry
from webhook.core.podresources import requests_above_limits
from webhook.core.template import references, render

MAX_RENDERS = 256  # per entry: the namespaces and parameter combinations a cluster uses at once; a few KB each


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a key of webhook.core.combined
class Rendered:
    containers: list[dict[str, Any]]  # as injected: with restartPolicy Always when they run as native sidecars
    volumes: list[dict[str, Any]]
    app_env: list[dict[str, Any]]
    app_mounts: list[dict[str, Any]]
    annotations: dict[str, str]
    # What the apiserver would refuse in these containers (a request above its limit, from parameters), found
    # once per render; the engine denies with the parameters' sources.
    problems: tuple[str, ...] = ()


class RenderCache:
    """A bounded, least-recently-used map from placeholder values to one entry's Rendered.

    The server's event loop and its background audit (a thread of its own) share the served entries' caches:
    the map is read and changed under a lock, rendering happens outside it. A reload builds new entries."""

    def __init__(self, containers: Any, volumes: Any, app_env: Any, app_mounts: Any, annotations: Any = None,
                 size: int = MAX_RENDERS):
        self.templates = (containers, volumes, app_env, app_mounts, annotations or {})
        self.references = tuple(sorted(set().union(*(references(t) for t in self.templates))))
        # The key is read from two maps (the entry's parameters, the Pod's own values) without merging them.
        self._own = tuple(ref for ref in self.references if not ref.startswith("pod."))
        self._pod = tuple(ref for ref in self.references if ref.startswith("pod."))
        self.size = size
        self._renders: OrderedDict[tuple[Any, ...], Rendered] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._renders)

    def get(self, values: dict[str, Any], pod_values: dict[str, Any], native: bool,
            registry: str | None = None) -> Rendered:
        """`values`: the parameters' placeholders' values; `pod_values`: those of the `pod.*` placeholders.
        `registry`: every image pulled from it instead (webhook.core.images)."""
        key = (native, registry, *map(values.__getitem__, self._own), *map(pod_values.__getitem__, self._pod))
        with self._lock:
            found = self._renders.get(key)
            if found is not None:
                self._renders.move_to_end(key)
                return found
        found = self._render(values | pod_values, native, registry)
        with self._lock:
            self._renders[key] = found
            if len(self._renders) > self.size:
                self._renders.popitem(last=False)
        return found

    def _render(self, values: dict[str, Any], native: bool, registry: str | None) -> Rendered:
        containers, volumes, app_env, app_mounts, annotations = (render(t, values) for t in self.templates)
        if native:
            containers = [container | {"restartPolicy": "Always"} for container in containers]
        if registry:
            containers = [container | {"image": with_registry(container["image"], registry)} for container in containers]
        return Rendered(containers, volumes, app_env, app_mounts, annotations, requests_above_limits(containers))
