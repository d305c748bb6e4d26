"""What a set of rendered entries adds together, worked out once per combination and kept with the catalogue.

A cluster injects a handful of combinations (the same entries with the same renders), and most of what
`additions.build` works out depends on them alone: the containers split into native sidecars and regular
ones, their names and ports, the volumes shared between entries, the env and mounts every app container
gets. Kept here, keyed by the renders themselves (never by anything of the request), so that for a Pod a
plan only checks that none of it meets the Pod's own. A combination whose entries clash among themselves,
or disagree on an env var or mount, is marked so: `additions.build` then works the Pod through entry by
entry, with its messages.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.core.renders import Rendered

MAX_COMBINATIONS = 256  # per catalogue: the combinations a cluster injects at once


@dataclass(frozen=True)
class Combined:
    clean: bool  # no clash and no disagreement between the entries: the rest is valid
    annotations: dict[str, str]
    native_sidecars: list[dict[str, Any]]
    containers: list[dict[str, Any]]
    names: frozenset[str]  # of the containers
    ports: frozenset[tuple[Any, str]]  # (containerPort, protocol) of the containers
    listening: bool  # a container declares a port (refused in a host-network Pod)
    volumes: list[dict[str, Any]]  # shared between entries where identical
    volume_names: frozenset[str]
    env: list[dict[str, Any]]  # what every app container gets, when no app container has any of it
    mounts: list[dict[str, Any]]
    env_names: frozenset[str]
    mount_paths: frozenset[str]
    regular: tuple[str, ...]  # entries that run as regular containers, in order
    # For the patch as the server writes it (webhook.core.patch, wire=True): the JSON of every value above by
    # id (alive as long as this is), and each app container's operations with \x00 for its index, by (env or
    # volumeMounts, whether the container has that list already).
    json: dict[int, orjson.Fragment] = field(default_factory=dict, compare=False, repr=False)
    chunks: dict[tuple[str, bool], bytes] = field(default_factory=dict, compare=False, repr=False)


Key = tuple[tuple[str, Rendered, bool], ...]


def combine(key: Key) -> Combined:
    annotations: dict[str, str] = {}
    native: list[dict[str, Any]] = []
    regular: list[dict[str, Any]] = []
    ports: set[tuple[Any, str]] = set()
    volumes: dict[str, dict[str, Any]] = {}
    clean = True
    for _, rendered, is_native in key:
        for name, value in rendered.annotations.items():
            clean &= annotations.setdefault(name, value) == value
        for container in rendered.containers:
            for port in container.get("ports") or ():
                port_key = (port["containerPort"], port.get("protocol", "TCP"))
                clean &= port_key not in ports
                ports.add(port_key)
            (native if is_native else regular).append(container)
        for volume in rendered.volumes:
            clean &= volumes.setdefault(volume["name"], volume) == volume
    merged = app_additions([rendered for _, rendered, _ in key])
    clean &= merged is not None
    env, mounts = merged or ({}, {})
    names = [container["name"] for container in native + regular]
    clean &= len(set(names)) == len(names)
    combined = Combined(clean, annotations, native, regular, frozenset(names), frozenset(ports), bool(ports),
                        list(volumes.values()), frozenset(volumes), list(env.values()), list(mounts.values()),
                        frozenset(env), frozenset(mounts), tuple(name for name, _, is_native in key if not is_native))
    for value in [*native, *regular, *combined.volumes, *annotations.values(), *combined.env, *combined.mounts]:
        combined.json[id(value)] = orjson.Fragment(orjson.dumps(value))
    for field_name, items in (("env", combined.env), ("volumeMounts", combined.mounts)):
        path = b'{"op":"add","path":"/spec/containers/\x00/' + field_name.encode()
        combined.chunks[field_name, False] = path + b'","value":' + orjson.dumps(items) + b"}"
        combined.chunks[field_name, True] = b",".join(path + b'/-","value":' + orjson.dumps(item) + b"}" for item in items)
    return combined


def app_additions(renders: list[Rendered]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] | None:
    """The env vars (by name) and mounts (by path) the entries give every app container, or None where two
    entries disagree on one (two log entries mounting the same directory agree)."""
    env: dict[str, dict[str, Any]] = {}
    mounts: dict[str, dict[str, Any]] = {}
    for rendered in renders:
        for var in rendered.app_env:
            if env.setdefault(var["name"], var) != var:
                return None
        for mount in rendered.app_mounts:
            if mounts.setdefault(mount["mountPath"], mount) != mount:
                return None
    return env, mounts


class Combinations:
    """A bounded, least-recently-used map from a combination of renders to what they add together; shared by
    the event loop and the background audit, as the renders' own caches (webhook.core.renders), so under a lock."""

    def __init__(self, size: int = MAX_COMBINATIONS):
        self.size = size
        self._combined: OrderedDict[Key, Combined] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._combined)

    def get(self, key: Key) -> Combined:
        with self._lock:
            found = self._combined.get(key)
            if found is not None:
                self._combined.move_to_end(key)
                return found
        found = combine(key)
        with self._lock:
            self._combined[key] = found
            if len(self._combined) > self.size:
                self._combined.popitem(last=False)
        return found
