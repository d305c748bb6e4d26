"""A status claim checked against the Pod: does it hold what the entry injects, as a fresh rendering gives it?

`podpatterns.io/status` is written by the webhook, but anyone can write an annotation: a Pod can arrive
claiming an entry it does not hold (forged, or copied without its containers), holding a look-alike
container under the entry's name, or holding what an older catalogue version injected. An entry counts
as injected only when every container, volume and annotation it injects is in the Pod with the values
it sets. Fields the Pod has beyond those (the apiserver's defaults of a Pod copied from
`kubectl get -o yaml`, a policy's default resources) do not count against it.
"""

from __future__ import annotations

from typing import Any

from webhook.core.pod import PodView
from webhook.core.renders import Rendered

LISTS = ("initContainers", "containers")


def find_container(pod: PodView, name: str) -> tuple[str, int] | None:
    """Where a container of that name is, among the lists an entry injects into."""
    for kind in LISTS:
        for index, container in enumerate(pod.lists[kind] or ()):
            if container.get("name") == name:
                return kind, index
    return None


def mismatch(pod: PodView, rendered: Rendered) -> str | None:
    """Why the Pod does not hold what `rendered` injects (a phrase for the user), or None when it does.
    A container may run as a native sidecar or a regular container: the cluster version decides that."""
    for container in rendered.containers:
        where = find_container(pod, container["name"])
        if where is None:
            return f"the Pod has no container {container['name']}"
        have = pod.lists[where[0]][where[1]]
        want = {k: v for k, v in container.items() if k != "restartPolicy"}
        if where[0] == "initContainers" and have.get("restartPolicy") != "Always":
            return f"its container {container['name']} is an init container that does not keep running"
        different = _first_difference(want, have)
        if different is not None:
            return f"its container {container['name']} differs from the entry's: {different}"
    volumes = {v.get("name"): v for v in pod.volumes or ()}
    for volume in rendered.volumes:
        if volume["name"] not in volumes:
            return f"the Pod has no volume {volume['name']}"
        different = _first_difference(volume, volumes[volume["name"]])
        if different is not None:
            return f"its volume {volume['name']} differs from the entry's: {different}"
    for key, value in rendered.annotations.items():
        if pod.annotations.get(key) != value:
            return f"its annotation {key} is not the entry's"
    return None


def _first_difference(want: Any, have: Any, path: str = "") -> str | None:
    """The first place where `have` does not carry what `want` sets, as `path: have (expected want)`."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return f"{path or 'value'} is {_short(have)}"
        for key, value in want.items():
            found = _first_difference(value, have.get(key), f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return f"{path} is {_short(have)}, expected {_short(want)}"
        for i, (a, b) in enumerate(zip(want, have)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if want != have:
        return f"{path} is {_short(have)}, expected {_short(want)}"
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
