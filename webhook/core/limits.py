"""The policy's per-Pod limits: how many containers a Pod may have, and resource limits on every container.

Runs after the injection is planned, over the app's containers and init containers and the injected
ones, so a rule holds for the Pod that will actually run.
"""

from __future__ import annotations

from typing import Any

from kubernetes.utils import parse_quantity

from webhook.core import podresources
from webhook.core.patch import Additions
from webhook.core.pod import PodView
from webhook.core.rules import LIMITED, Rule


def container_count_excess(pod: PodView, additions: Additions, rule: Rule) -> str | None:
    """Why the Pod breaks the rule's container cap, or None."""
    app = len(pod.containers) + len(pod.lists["initContainers"] or ())
    injected = [c["name"] for c in additions.native_sidecars + additions.containers]
    total = app + len(injected)
    if rule.max_containers is None or total <= rule.max_containers:
        return None
    added = f", {len(injected)} injected ({', '.join(injected)})" if injected else ""
    return f"the Pod would have {total} containers ({app} of its own{added}); rule {rule.name} allows at most {rule.max_containers}"


def apply(pod: PodView, additions: Additions, rule: Rule, defaulting: bool = True) -> tuple[str | None, list[str]]:
    """Sets the rule's default resources where cpu/memory limits are missing (missingLimits: default, when
    `defaulting`), else finds them. Returns (what is missing as a message, or None; the containers given defaults)."""
    assert rule.resources is not None
    mode, defaults = rule.resources.missing_limits, rule.resources.defaults
    defaulting = defaulting and mode == "default"
    # What the Pod sets at Pod level is its containers' shared budget: a resource limited there counts as
    # limited for each of them, and gets no per-container default (a defaulted request could push the
    # containers' total over the Pod's own, which the apiserver refuses).
    pod_level = podresources.pod_level(pod)
    at_pod_level = {resource for values in pod_level.values() for resource in values}
    defaults = {kind: {r: q for r, q in values.items() if r not in at_pod_level} for kind, values in defaults.items()}
    limited = set(pod_level.get("limits", {}))
    missing: list[str] = []
    defaulted: list[str] = []
    for kind in ("containers", "initContainers"):
        for index, container in enumerate(pod.lists[kind] or ()):
            resources = additions.app_resources.get((kind, index)) or container.get("resources") or {}
            if defaulting:
                merged = _with_defaults(resources, defaults)
                if merged != resources:
                    additions.app_resources[(kind, index)] = merged
                    defaulted.append(container["name"])
            else:
                missing += _missing(container["name"], resources, limited)
    for group in (additions.native_sidecars, additions.containers):
        for i, container in enumerate(group):
            resources = container.get("resources") or {}
            if defaulting:
                merged = _with_defaults(resources, defaults)
                if merged != resources:
                    group[i] = container | {"resources": merged}  # a copy: the template's parts are shared
                    defaulted.append(container["name"])
            else:
                missing += _missing(container["name"], resources, limited)
    if defaulted:
        return None, defaulted
    if not missing:
        return None, []
    return f"rule {rule.name}: every container needs cpu and memory limits; missing: {', '.join(missing)}", []


def _missing(name: str, resources: dict[str, Any], limited_by_pod: set[str]) -> list[str]:
    limits = resources.get("limits") or {}
    return [f"{name} {resource}" for resource in LIMITED if resource not in limits and resource not in limited_by_pod]


def _with_defaults(resources: dict[str, Any], defaults: dict[str, dict[str, str]]) -> dict[str, Any]:
    """`resources` with the defaults filled in where a value is missing, always a valid combination:
    a defaulted limit is never below the container's own request, a defaulted request never above its limit."""
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    for resource, quantity in defaults.get("limits", {}).items():
        if resource not in limits:
            own_request = requests.get(resource)
            limits[resource] = own_request if own_request is not None and _above(own_request, quantity) else quantity
    for resource, quantity in defaults.get("requests", {}).items():
        if resource not in requests:
            limit = limits.get(resource)
            requests[resource] = limit if limit is not None and _above(quantity, limit) else quantity
    merged = dict(resources)
    if requests:
        merged["requests"] = requests
    if limits:
        merged["limits"] = limits
    return merged


def _above(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) > parse_quantity(b)
    except ValueError:
        return False  # the apiserver refuses an invalid quantity of the Pod's own with its own message
