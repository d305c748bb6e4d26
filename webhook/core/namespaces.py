"""How the request path learns a Pod's Namespace (labels, annotations).

In a cluster it is the watched cache of webhook.cluster.namespacecache: a hit is a dict read that never
waits. A Namespace the cache has not seen (new, or the first list has not arrived) raises NotCached with
a lookup already under way; the server waits for it off its event loop, within a bound, and decides with
that copy, or refuses the review with NamespaceUnavailable's message: a Pod is never decided as if its
Namespace had no labels. Offline and in tests, a fixed set (StaticNamespaces).
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

from webhook.core.engine import NamespaceInfo

_STATUS_REASONS = {400: "BadRequest", 404: "NotFound", 503: "ServiceUnavailable"}


class NotCached(Exception):
    """The Namespace is not in the cache. `pending` is the lookup already started (a
    `concurrent.futures.Future` of the NamespaceInfo, shared by every review waiting for the same name,
    raising NamespaceUnavailable); the caller waits at most `timeout` seconds for it."""

    def __init__(self, name: str, pending: Any, timeout: float, synced: bool = True):
        super().__init__(name)
        self.name, self.pending, self.timeout, self.synced = name, pending, timeout, synced


class NamespaceUnavailable(Exception):
    """The Namespace could not be read (`code` 503), does not exist (404) or cannot exist (400): a review
    is refused with `message` rather than decided without the Namespace's labels and annotations."""

    def __init__(self, name: str, reason: str, code: int = 503, synced: bool = True):
        super().__init__(reason)
        self.name, self.reason, self.code, self.synced = name, reason, code, synced

    @property
    def status_reason(self) -> str:
        return _STATUS_REASONS.get(self.code, "ServiceUnavailable")

    def _what(self) -> str:
        read = "could not read" if self.synced else "has not listed the cluster's Namespaces yet and could not read"
        return f"podpatterns {read} Namespace {self.name} ({self.reason})"

    @property
    def message(self) -> str:
        """The denial's text, which the user sees."""
        if self.code == 404:
            return f"Namespace {self.name} does not exist (podpatterns read it from the API: {self.reason}); the Pod is refused"
        if self.code == 400:
            return f"{self.name[:80]!r} is not a valid Namespace name ({self.reason}); the Pod is refused"
        return (f"{self._what()}; the Pod is refused rather than created without the entries its Namespace or a "
                "policy rule may require; retry")

    @property
    def deferred_message(self) -> str:
        """The text of the HTTP 503 that leaves the decision to the webhook's failurePolicy
        (`--unsynced-namespaces skip`)."""
        return f"{self._what()}; the webhook's failurePolicy decides; retry"


class Namespaces(Protocol):
    def lookup(self, name: str) -> NamespaceInfo:
        """The Namespace, or one with no labels and annotations when unknown; a cache may raise NotCached
        (the caller waits for the lookup under way) or NamespaceUnavailable."""
        ...


class StaticNamespaces:
    """A fixed set of Namespaces (e.g. the Namespace documents of a manifest for `podpatterns explain`)."""

    def __init__(self, namespaces: Iterable[NamespaceInfo] = ()):
        self.by_name = {ns.name: ns for ns in namespaces}

    def lookup(self, name: str) -> NamespaceInfo:
        return self.by_name.get(name) or NamespaceInfo(name)


class RefusedNamespaces:
    """Answers every lookup with the same NamespaceUnavailable: how a review whose Namespace could not be
    read is decided (refused with its message)."""

    def __init__(self, failure: NamespaceUnavailable):
        self.failure = failure

    def lookup(self, name: str) -> NamespaceInfo:
        raise self.failure


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
