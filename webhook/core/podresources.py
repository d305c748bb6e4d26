"""Pod-level resources (spec.resources, Kubernetes >= 1.34): the app's budget stays what it was.

The apiserver requires the Pod's requests and limits to cover its containers' together. An injected
container brings its own requests and limits, so each cpu or memory value the Pod sets at Pod level
grows by what the injected containers declare; without that the apiserver refuses the Pod (its own
example: "spec.resources.requests[memory]: must be greater than or equal to aggregate container
requests"), or the app's share silently shrinks.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from webhook.core.pod import PodView

POD_LEVEL = ("cpu", "memory")  # what Kubernetes accepts in spec.resources
MEBI = Decimal(1024 * 1024)


def pod_level(pod: PodView) -> dict[str, dict[str, Any]]:
    """The Pod's own spec.resources requests and limits ({} when it sets none)."""
    resources = pod.spec.get("resources")
    if not isinstance(resources, dict):
        return {}
    return {kind: values for kind in ("requests", "limits") if isinstance(values := resources.get(kind), dict)}


def is_limited(pod: PodView, resource: str) -> bool:
    """Whether the Pod limits `resource` at Pod level: its containers count as limited for it."""
    return resource in pod_level(pod).get("limits", {})


def grown(pod: PodView, injected: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The Pod-level values that must grow, kind -> resource -> new quantity, by the injected containers'
    requests and limits. Empty when the Pod sets no Pod-level resources or nothing is injected."""
    current = pod_level(pod)
    if not current:
        return {}
    out: dict[str, dict[str, str]] = {}
    for kind, values in current.items():
        for resource in POD_LEVEL:
            if resource not in values:
                continue
            added = sum((parse_quantity(c.get("resources", {}).get(kind, {}).get(resource, 0)) for c in injected),
                        Decimal(0))
            if added:
                total = parse_quantity(values[resource]) + added
                out.setdefault(kind, {})[resource] = _quantity(total, resource)
    return out


def requests_above_limits(containers: list[dict[str, Any]]) -> tuple[str, ...]:
    """Each injected container's request that exceeds its own limit (resources set from parameters can), which
    the apiserver refuses: "container NAME: memory request 256Mi is above its limit 128Mi"."""
    found = []
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for resource in sorted(set(requests) & set(limits)):
            try:
                above = parse_quantity(requests[resource]) > parse_quantity(limits[resource])
            except ValueError:
                continue  # a value no parameter could give: the catalogue checked the template
            if above:
                found.append(f"container {container.get('name')}: {resource} request {requests[resource]} is above "
                             f"its limit {limits[resource]}")
    return tuple(found)


def _quantity(value: Decimal, resource: str) -> str:
    """A canonical-enough quantity, rounded up so it still covers the containers: cpu in whole cores or
    millicores, memory in Mi or bytes."""
    if resource == "cpu":
        if value == value.to_integral_value():
            return str(int(value))
        return f"{int((value * 1000).to_integral_value(ROUND_CEILING))}m"
    return f"{int(value / MEBI)}Mi" if value % MEBI == 0 else str(int(value.to_integral_value(ROUND_CEILING)))
