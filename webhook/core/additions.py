"""What the chosen entries add to a Pod: containers, volumes, annotations, app env and mounts.

Every clash with what the Pod already has (a container name, a port, a volume of that name with another
definition, a mount path) is a Clash, which the engine turns into a denial; identical things are shared.
A re-injected entry's look-alikes are replaced where they stand (strip and re-inject).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from webhook.core import podkinds, verify
from webhook.core.combined import Combinations, Combined, app_additions
from webhook.core.entries import Entry
from webhook.core.patch import Additions
from webhook.core.pod import CONTAINER_LISTS, PodView
from webhook.core.renders import Rendered


class Clash(Exception):
    """Something an entry adds meets the Pod's own: the Pod must not be created as it is."""


@dataclass
class Chosen:
    entry: Entry
    rendered: Rendered
    native: bool
    replace: bool = False  # re-injected: its containers and volumes in the Pod (look-alikes, stale) are replaced


def build(pod: PodView, chosen: list[Chosen], warnings: list[str], combinations: Combinations | None = None) -> Additions:
    """What the chosen entries add to the Pod; raises Clash where something they add meets the Pod's own.
    `combinations`: the catalogue's, where what the entries add together is kept (webhook.core.combined)."""
    if combinations is not None and not any(item.replace for item in chosen):
        combined = combinations.get(tuple((item.entry.name, item.rendered, item.native) for item in chosen))
        if _meets_nothing(pod, combined):
            return _all_at_once(pod, combined, chosen, warnings)
    add = Additions()
    names = {c["name"]: f"spec.{kind}" for kind in CONTAINER_LISTS for c in pod.lists[kind] or ()}
    ports = {
        (p["containerPort"], p.get("protocol", "TCP")): c["name"]
        for kind in ("containers", "initContainers")
        for c in pod.lists[kind] or ()
        for p in c.get("ports") or ()
    }
    volumes = {v["name"]: v for v in pod.volumes or ()}
    if pod.partial and any(v["name"] in volumes for c in chosen for v in c.rendered.volumes):
        pod.needs_whole()  # the Pod's volume of that name is compared whole with the entry's
    renders = [(c.entry, c.rendered, c.native) for c in chosen]
    replaced = set()
    for item in chosen:
        if item.replace:
            replaced |= _replace_in_place(pod, item, add, names, ports, volumes)
    same_for_all = _same_for_all(pod, [rendered for _, rendered, _ in renders])
    if same_for_all is None:
        pod.needs_whole()  # _AppContainers compares the values the containers already have
    app = _AppContainers(pod) if same_for_all is None else None
    _warn_env_from(pod, renders, warnings)
    for entry, rendered, native in renders:
        for key, value in rendered.annotations.items():
            # The entry's own: a value the Pod brought under that key (forged or stale) is replaced.
            if add.annotations.setdefault(key, value) != value:
                raise Clash(f"{entry.name}: its annotation {key} clashes with another entry's")
        for container in rendered.containers:
            name = container["name"]
            clash = podkinds.host_network_clash(pod, entry.name, container)
            if clash:
                raise Clash(clash)
            if name in replaced:
                continue
            if name in names:
                raise Clash(f"{entry.name}: its container {name!r} clashes with the container {name!r} in {names[name]}")
            names[name] = f"entry {entry.name}"
            for port in container.get("ports") or ():
                key = (port["containerPort"], port.get("protocol", "TCP"))
                if key in ports:
                    raise Clash(
                        f"{entry.name}: port {key[0]}/{key[1]} of its container {name!r} clashes with "
                        f"container {ports[key]!r}, which uses the same port (containers share the Pod's network)"
                    )
                ports[key] = name
            (add.native_sidecars if native else add.containers).append(container)
        for volume in rendered.volumes:
            existing = volumes.get(volume["name"])
            if existing is None:
                volumes[volume["name"]] = volume
                add.volumes.append(volume)
            elif existing != volume:  # an identical volume is shared, e.g. the log volume of two entries
                raise Clash(f"{entry.name}: its volume {volume['name']!r} clashes with a different volume of that name")
        if app is not None:
            app.add(entry, rendered, add, warnings)
        if not native:
            _warn_restart_policy(pod, entry.name, warnings)
    if same_for_all is not None:
        _to_every_app_container(pod, add, *same_for_all)
    return add


def _meets_nothing(pod: PodView, combined: Combined) -> bool:
    """Whether nothing the combination adds meets the Pod's own (names, ports, volumes, the app containers' env
    names and mount paths, a host network), nor clashes within itself: then it is added as it is."""
    if not combined.clean or (combined.listening and pod.spec.get("hostNetwork") is True):
        return False
    lists = pod.lists
    if not combined.names.isdisjoint(c["name"] for kind in CONTAINER_LISTS for c in lists[kind] or ()):
        return False
    if not combined.ports.isdisjoint((p["containerPort"], p.get("protocol", "TCP")) for kind in ("containers", "initContainers")
                                     for c in lists[kind] or () for p in c.get("ports") or ()):
        return False
    if pod.volumes and not combined.volume_names.isdisjoint(map(itemgetter("name"), pod.volumes)):
        return False
    # Everything the app containers have, read at C speed (map, chain): this is the part that grows with the Pod.
    containers = pod.containers
    env = chain.from_iterable(c.get("env") or () for c in containers)
    mounts = chain.from_iterable(c.get("volumeMounts") or () for c in containers)
    return (combined.env_names.isdisjoint(map(dict.get, env, repeat("name")))
            and combined.mount_paths.isdisjoint(map(dict.get, mounts, repeat("mountPath"))))


def _all_at_once(pod: PodView, combined: Combined, chosen: list[Chosen], warnings: list[str]) -> Additions:
    """The Additions of a combination that meets nothing of the Pod's: what the entry-by-entry path gives then."""
    _warn_env_from(pod, [(c.entry, c.rendered, c.native) for c in chosen], warnings)
    for name in combined.regular:
        _warn_restart_policy(pod, name, warnings)
    # Lists of their own: the engine adds to them, and limits.apply replaces containers it gives defaults.
    add = Additions(annotations=dict(combined.annotations), volumes=list(combined.volumes),
                    native_sidecars=list(combined.native_sidecars), containers=list(combined.containers),
                    combined=combined)
    _to_every_app_container(pod, add, combined.env, combined.mounts)
    return add


def _to_every_app_container(pod: PodView, add: Additions, env: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> None:
    # A list each: the CLI's YAML would show one shared list as an alias.
    indexes = range(len(pod.containers))
    if env:
        add.app_env.update((index, list(env)) for index in indexes)
    if mounts:
        add.app_mounts.update((index, list(mounts)) for index in indexes)


def _warn_restart_policy(pod: PodView, entry: str, warnings: list[str]) -> None:
    if pod.spec.get("restartPolicy", "Always") != "Always":
        warnings.append(f"{entry} runs as a regular container: a Pod with restartPolicy {pod.spec.get('restartPolicy')} "
                        f"will not complete while it runs (native sidecars need Kubernetes >= 1.29)")


def _replace_in_place(pod: PodView, item: Chosen, add: Additions, names: dict[str, str],
                      ports: dict[tuple[Any, str], str], volumes: dict[str, dict[str, Any]]) -> set[str]:
    """Strip and re-inject, as Istio does with what its status annotation lists: the containers and volumes
    of a re-injected entry that the Pod has under the entry's names (look-alikes, or an older version's)
    are replaced where they stand. Returns the names of the containers replaced."""
    done = set()
    for container in item.rendered.containers:
        where = verify.find_container(pod, container["name"])
        if where is None:
            continue
        kind, index = where
        # Kept in its list: a native sidecar there, a regular container in spec.containers.
        fresh = {k: v for k, v in container.items() if k != "restartPolicy"}
        if kind == "initContainers":
            fresh["restartPolicy"] = "Always"
        add.replaced[(kind, index)] = fresh
        for key in [key for key, owner in ports.items() if owner == container["name"]]:
            del ports[key]
        for port in fresh.get("ports") or ():
            ports[(port["containerPort"], port.get("protocol", "TCP"))] = container["name"]
        names[container["name"]] = f"entry {item.entry.name}"
        done.add(container["name"])
    for volume in item.rendered.volumes:
        index = next((i for i, v in enumerate(pod.volumes or ()) if v.get("name") == volume["name"]), None)
        if index is not None and pod.volumes[index] != volume:
            add.replaced_volumes[index] = volume
            volumes[volume["name"]] = volume
    return done


def _warn_env_from(pod: PodView, renders: list[tuple[Entry, Rendered, bool]], warnings: list[str]) -> None:
    """Variables set in env win over the same names from envFrom: an app reading DB_HOST from its ConfigMap
    would silently get the entry's value instead."""
    sources = [(c["name"], c["envFrom"]) for c in pod.containers if isinstance(c.get("envFrom"), list) and c["envFrom"]]
    if not sources:
        return
    for entry, rendered, _ in renders:
        names = ", ".join(var["name"] for var in rendered.app_env)
        for container, env_from in sources:
            if names:
                origin = ", ".join(next((f"{k} {v.get('name', '')}".strip() for k, v in ref.items() if isinstance(v, dict)), "envFrom")
                                   for ref in env_from if isinstance(ref, dict))
                warnings.append(f"container {container} takes variables from envFrom ({origin}); {entry.name} sets "
                                f"{names} in env, which win over the same names there")


def _same_for_all(pod: PodView, renders: list[Rendered]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The env and volumeMounts every app container gets, in the usual case where they are the same for all:
    no app container has any of the entries' env var names or mount paths, and the entries agree where
    they overlap (two log entries mounting the same log directory). None otherwise, where _AppContainers
    decides container by container, with its warnings and denials."""
    merged = app_additions(renders)
    if merged is None:
        return None
    env, mounts = merged
    env_names, mount_paths = frozenset(env), frozenset(mounts)
    for container in pod.containers:
        # map(dict.get, …) reads the names at C speed: this loop is over everything the app containers have.
        if not env_names.isdisjoint(map(dict.get, container.get("env") or (), repeat("name"))):
            return None
        if not mount_paths.isdisjoint(map(dict.get, container.get("volumeMounts") or (), repeat("mountPath"))):
            return None
    return list(env.values()), list(mounts.values())


class _AppContainers:
    """Entry after entry, what each app container has: its own env var names and mount paths, and those
    added so far. Used where the additions are not the same for all (see _same_for_all): a name that is
    already there keeps its value, with a warning if the entry's differs; a mount path that is already
    there with another volume is a denial."""

    def __init__(self, pod: PodView):
        self.containers = pod.containers
        self.env_names = [{var.get("name") for var in c.get("env") or ()} for c in self.containers]
        self.mount_paths = [{m.get("mountPath") for m in c.get("volumeMounts") or ()} for c in self.containers]

    def add(self, entry: Entry, rendered: Rendered, add: Additions, warnings: list[str]) -> None:
        for index, container in enumerate(self.containers):
            env_names, mount_paths = self.env_names[index], self.mount_paths[index]
            for var in rendered.app_env:
                if var["name"] not in env_names:
                    env_names.add(var["name"])
                    add.app_env.setdefault(index, []).append(var)
                elif _existing(container.get("env"), add.app_env.get(index), "name", var["name"]) != var:
                    warnings.append(f"container {container['name']} already sets {var['name']}; {entry.name} kept that value")
            for mount in rendered.app_mounts:
                if mount["mountPath"] not in mount_paths:
                    mount_paths.add(mount["mountPath"])
                    add.app_mounts.setdefault(index, []).append(mount)
                    continue
                have = _existing(container.get("volumeMounts"), add.app_mounts.get(index), "mountPath", mount["mountPath"])
                if have != mount:
                    raise Clash(
                        f"{entry.name}: mount path {mount['mountPath']} in container {container['name']!r} clashes "
                        f"with its mount of volume {have.get('name')!r}; change one of the two paths"
                    )


def _existing(own: list[dict[str, Any]] | None, added: list[dict[str, Any]] | None, key: str, value: str) -> dict[str, Any]:
    """The item a container has under `key` = `value`: an added one, else the last of its own."""
    for item in chain(reversed(added or ()), reversed(own or ())):
        if item.get(key) == value:
            return item
    raise AssertionError(f"no {key} {value!r}")  # the caller saw it in the names
