"""The injection engine: a pure function from a Pod, its catalogue and settings to a plan.

A plan is the list of JSON-Patch operations plus what was decided for each requested entry and the
warnings, or a denial that names the annotation, the value and what would be accepted. No I/O, no
globals: the HTTP endpoint, the CLI and the tests all call `plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from webhook.catalogue import Catalogue, Entry
from webhook.keys import DEFAULT_CONTAINER, AnnotationKeys
from webhook.parameters import ParameterError
from webhook.patch import Additions, Op, operations
from webhook.pod import CONTAINER_LISTS, PodShapeError, PodView, check_containers, read_pod
from webhook.template import render

MAX_SHOWN = 100  # characters of a user's value repeated in a message


@dataclass(frozen=True)
class Settings:
    keys: AnnotationKeys = AnnotationKeys()
    native_sidecars: bool = True  # the cluster runs Kubernetes >= 1.29 (see webhook.kubeversion)


@dataclass(frozen=True)
class Decision:
    entry: str
    source: str  # which annotation or rule asked for it
    injected: bool
    reason: str = ""  # why not, when not injected
    parameters: dict[str, tuple[Any, str]] = field(default_factory=dict)  # name -> (value, where it came from)


@dataclass
class Plan:
    ops: list[Op] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    denial: str | None = None

    @property
    def injected(self) -> list[str]:
        return [d.entry for d in self.decisions if d.injected]


class Denied(Exception):
    """A user mistake: the Pod must not be created as it is."""


def plan(pod: Any, catalogue: Catalogue, settings: Settings, namespace: str = "", name: str = "") -> Plan:
    """`namespace` and `name` stand in when the Pod has none (the request's namespace; a workload's name)."""
    result = Plan()
    try:
        view = read_pod(pod, namespace, name)
        _plan(view, catalogue, settings, result)
    except PodShapeError as err:
        result.ops, result.denial = [], f"the object is not a valid Pod: {err}"
    except Denied as err:
        result.ops, result.denial = [], str(err)
    return result


def _plan(pod: PodView, catalogue: Catalogue, settings: Settings, result: Plan) -> None:
    keys = settings.keys
    requested = _requested(pod, catalogue, keys, result.warnings)
    records = _status_records(pod, keys)
    done = {r["entry"] for r in records}
    supplied = _supplied_parameters(pod, catalogue, keys, {name for name, _ in requested}, done, result.warnings)
    chosen: list[tuple[Entry, dict[str, tuple[Any, str]]]] = []
    for name, source in requested:
        if name in done:
            result.decisions.append(Decision(name, source, False, f"already injected (annotation {keys.status})"))
            continue
        entry = catalogue[name]
        values = _resolve_parameters(entry, supplied.get(name, {}), keys)
        result.decisions.append(Decision(name, source, True, parameters=values))
        chosen.append((entry, values))
    if not chosen:
        return
    check_containers(pod)
    additions = _additions(pod, chosen, settings, result.warnings)
    records += [{"entry": e.name, "pattern": e.pattern, "digest": e.digest} for e, _ in chosen]
    additions.annotations[keys.status] = orjson.dumps(records).decode()
    if DEFAULT_CONTAINER not in pod.annotations:
        # Keeps `kubectl logs` and `kubectl exec` on the app, not on an injected container.
        additions.annotations[DEFAULT_CONTAINER] = pod.containers[0]["name"]
    result.ops = operations(pod, additions)


def _show(value: str) -> str:
    return repr(value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN] + "…")


def _requested(pod: PodView, catalogue: Catalogue, keys: AnnotationKeys, warnings: list[str]) -> list[tuple[str, str]]:
    value = pod.annotations.get(keys.inject)
    if value is None:
        return []
    names: list[str] = []
    for name in (part.strip() for part in value.split(",")):
        if not name:
            continue
        if name not in catalogue:
            raise Denied(
                f"annotation {keys.inject}: {_show(value)} names unknown entry {_show(name)}; "
                f"known entries: {', '.join(catalogue.names())}"
            )
        if name in names:
            warnings.append(f"annotation {keys.inject}: {name} is listed twice; injected once")
            continue
        names.append(name)
    source = f"annotation {keys.inject}"
    return [(name, source) for name in names]


def _status_records(pod: PodView, keys: AnnotationKeys) -> list[dict[str, str]]:
    text = pod.annotations.get(keys.status)
    if text is None:
        return []
    try:
        records = orjson.loads(text)
    except orjson.JSONDecodeError:
        records = None
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("entry", "pattern", "digest")) for r in records
    ):
        raise Denied(
            f"annotation {keys.status}: {_show(text)} is not a record written by podpatterns "
            '(a JSON list of {"entry", "pattern", "digest"}); remove the annotation'
        )
    return records


def _supplied_parameters(
    pod: PodView, catalogue: Catalogue, keys: AnnotationKeys, requested: set[str], done: set[str], warnings: list[str]
) -> dict[str, dict[str, tuple[Any, str]]]:
    supplied: dict[str, dict[str, tuple[Any, str]]] = {}
    for key, text in pod.annotations.items():
        split = keys.split_parameter(key)
        if split is None:
            continue
        name, param_name = split
        if name not in catalogue:
            warnings.append(f"annotation {key}: there is no catalogue entry {name!r}; ignored")
            continue
        if name not in requested:
            warnings.append(f"annotation {key}: {name} is not requested for this Pod; ignored")
            continue
        if name in done:
            continue
        entry = catalogue[name]
        param = entry.parameters.get(param_name)
        if param is None:
            accepted = ", ".join(entry.parameters) or "none"
            raise Denied(f"annotation {key}: {name} has no parameter {param_name!r}; its parameters: {accepted}")
        try:
            value = param.parse(text)
        except ParameterError as err:
            raise Denied(f"annotation {key}: value {_show(text)} is not accepted: {err}") from None
        supplied.setdefault(name, {})[param_name] = (value, f"annotation {key}")
    return supplied


def _resolve_parameters(entry: Entry, supplied: dict[str, tuple[Any, str]], keys: AnnotationKeys) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    for param in entry.parameters.values():
        if param.name in supplied:
            values[param.name] = supplied[param.name]
        elif param.default is not None:
            values[param.name] = (param.default, "default")
        elif param.required:
            raise Denied(
                f"{entry.name}: required parameter {param.name} is missing; set annotation "
                f"{keys.parameter(entry.name, param.name)} to {param.accepted()} ({param.description})"
            )
    return values


def _additions(
    pod: PodView, chosen: list[tuple[Entry, dict[str, tuple[Any, str]]]], settings: Settings, warnings: list[str]
) -> Additions:
    add = Additions()
    names = {c["name"]: f"spec.{kind}" for kind in CONTAINER_LISTS for c in pod.lists[kind] or ()}
    ports = {
        (p["containerPort"], p.get("protocol", "TCP")): c["name"]
        for kind in ("containers", "initContainers")
        for c in pod.lists[kind] or ()
        for p in c.get("ports") or ()
    }
    volumes = {v["name"]: v for v in pod.volumes or ()}
    app_env = [{e.get("name"): e for e in c.get("env") or ()} for c in pod.containers]
    app_mounts = [{m.get("mountPath"): m for m in c.get("volumeMounts") or ()} for c in pod.containers]
    pod_values = {
        "pod.name": pod.name,
        "pod.namespace": pod.namespace,
        "pod.serviceAccountName": pod.spec.get("serviceAccountName") or "default",
    }
    for entry, params in chosen:
        values = {f"params.{name}": value for name, (value, _) in params.items()} | pod_values
        native = entry.lifecycle == "native" or (entry.lifecycle == "auto" and settings.native_sidecars)
        for container in render(entry.containers, values):
            name = container["name"]
            if name in names:
                raise Denied(f"{entry.name}: its container {name!r} clashes with the container {name!r} in {names[name]}")
            names[name] = f"entry {entry.name}"
            for port in container.get("ports") or ():
                key = (port["containerPort"], port.get("protocol", "TCP"))
                if key in ports:
                    raise Denied(
                        f"{entry.name}: port {key[0]}/{key[1]} of its container {name!r} clashes with "
                        f"container {ports[key]!r}, which uses the same port (containers share the Pod's network)"
                    )
                ports[key] = name
            if native:
                add.native_sidecars.append(container | {"restartPolicy": "Always"})
            else:
                add.containers.append(container)
        for volume in render(entry.volumes, values):
            existing = volumes.get(volume["name"])
            if existing is None:
                volumes[volume["name"]] = volume
                add.volumes.append(volume)
            elif existing != volume:  # an identical volume is shared, e.g. the log volume of two entries
                raise Denied(f"{entry.name}: its volume {volume['name']!r} clashes with a different volume of that name")
        env = render(entry.app_env, values)
        mounts = render(entry.app_mounts, values)
        for index, container in enumerate(pod.containers):
            for var in env:
                have = app_env[index].get(var["name"])
                if have is None:
                    app_env[index][var["name"]] = var
                    add.app_env.setdefault(index, []).append(var)
                elif have != var:
                    warnings.append(f"container {container['name']} already sets {var['name']}; {entry.name} kept that value")
            for mount in mounts:
                have = app_mounts[index].get(mount["mountPath"])
                if have is None:
                    app_mounts[index][mount["mountPath"]] = mount
                    add.app_mounts.setdefault(index, []).append(mount)
                elif have != mount:
                    raise Denied(
                        f"{entry.name}: mount path {mount['mountPath']} in container {container['name']!r} clashes "
                        f"with its mount of volume {have.get('name')!r}; change one of the two paths"
                    )
        if not native and pod.spec.get("restartPolicy", "Always") != "Always":
            warnings.append(
                f"{entry.name} runs as a regular container: a Pod with restartPolicy "
                f"{pod.spec.get('restartPolicy')} will not complete while it runs (native sidecars need Kubernetes >= 1.29)"
            )
    return add
