"""How the request path learns a Pod's Namespace (labels, annotations): a lookup that never blocks.

In a cluster it is the watched cache of webhook.namespacecache; offline and in tests, a fixed set.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from webhook.core.engine import NamespaceInfo


class NotSynced(Exception):
    """The Namespaces have never been read: answering now could skip a namespace default or a policy rule."""


class Namespaces(Protocol):
    def lookup(self, name: str) -> NamespaceInfo:
        """The Namespace, or one with no labels and annotations when unknown; may raise NotSynced."""
        ...


class StaticNamespaces:
    """A fixed set of Namespaces (e.g. the Namespace documents of a manifest for `podpatterns explain`)."""

    def __init__(self, namespaces: Iterable[NamespaceInfo] = ()):
        self.by_name = {ns.name: ns for ns in namespaces}

    def lookup(self, name: str) -> NamespaceInfo:
        return self.by_name.get(name) or NamespaceInfo(name)


def namespaces_in(docs: list[Any]) -> StaticNamespaces:
    """The Namespace documents of a manifest (`kubectl get ns prod -o yaml`), for namespace defaults and rules."""
    found = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "Namespace" and isinstance(doc.get("metadata"), dict):
            meta = doc["metadata"]
            labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
            if isinstance(meta.get("name"), str) and isinstance(labels, dict) and isinstance(annotations, dict):
                found.append(NamespaceInfo(meta["name"], {str(k): str(v) for k, v in labels.items()},
                                                  {str(k): str(v) for k, v in annotations.items()}))
    return StaticNamespaces(found)
