"""Updates of injected Pods: what an entry put into a running Pod stays as it was put there.

A Pod's spec is mostly immutable, but an UPDATE can still swap a container's image
(`kubectl set image pod/web log-shipper=busybox`) or edit annotations. For every entry the old Pod's
`podpatterns.io/status` lists, an UPDATE may not change or remove its containers, nor the annotations
the entry added, nor the status annotation itself (which day-two tools read). Everything else the
Pod's owner may still change. Subresources (ephemeral containers, status, resize) never come here.
"""

from __future__ import annotations

from typing import Any

import orjson

from webhook.core.entries import Catalogue
from webhook.core.keys import AnnotationKeys
from webhook.core.pod import PodView
from webhook.core.verify import find_container


def violation(old: PodView, new: PodView, catalogue: Catalogue, keys: AnnotationKeys) -> str | None:
    """Why the UPDATE from `old` to `new` is refused, or None."""
    entries = _listed(old, keys)
    if not entries:
        return None
    if new.annotations.get(keys.status) != old.annotations.get(keys.status):
        return (f"annotation {keys.status} records what podpatterns injected ({', '.join(entries)}) and may not be "
                f"changed or removed on a running Pod; recreate the Pod instead")
    for entry in entries:
        for name in _container_names(entry, catalogue):
            before, after = _container(old, name), _container(new, name)
            if before is not None and before != after:
                change = "removes it" if after is None else _change(before, after)
                return (f"container {name} was injected by podpatterns (entry {entry}), and this update {change}; "
                        f"an injected container may not be changed on a running Pod: recreate the Pod instead "
                        f"(its owner, e.g. `kubectl rollout restart`, gets it injected afresh)")
        for key in catalogue[entry].annotations if entry in catalogue else ():
            if new.annotations.get(key) != old.annotations.get(key):
                return f"annotation {key} was added by podpatterns (entry {entry}) and may not be changed on a running Pod"
    return None


def _listed(pod: PodView, keys: AnnotationKeys) -> list[str]:
    try:
        records = orjson.loads(pod.annotations.get(keys.status) or "[]")
    except orjson.JSONDecodeError:
        return []
    return [r["entry"] for r in records if isinstance(r, dict) and isinstance(r.get("entry"), str)] if isinstance(records, list) else []


def _container_names(entry: str, catalogue: Catalogue) -> list[str]:
    """An entry's container names are fixed in its template; an entry gone from the catalogue is known
    by its own name, the built-ins' convention."""
    if entry not in catalogue:
        return [entry]
    return [c["name"] for c in catalogue[entry].containers]


def _container(pod: PodView, name: str) -> dict[str, Any] | None:
    where = find_container(pod, name)
    return None if where is None else pod.lists[where[0]][where[1]]


def _change(before: dict[str, Any], after: dict[str, Any]) -> str:
    if before.get("image") != after.get("image"):
        return f"changes its image from {before.get('image')!r} to {after.get('image')!r}"
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return f"changes its {', '.join(changed)}"
