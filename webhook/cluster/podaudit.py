"""The audit of a cluster's Pods: the Namespaces read once, then the Pods page by page, each judged by admission's
own plan (webhook.core.podaudits). Only what the audit keeps of a Pod outlives its page, so a big cluster's Pods
are never all in memory at once."""

from __future__ import annotations

from typing import Any, Iterable

from webhook.cluster.podlists import pages, read_namespaces
from webhook.cluster.webhookconfig import EXCLUDED
from webhook.core.configuration import Configuration
from webhook.core.podaudits import Audit


def run(api: Any, configuration: Configuration, namespace: str | None, skipped: Iterable[str] = ()) -> Audit:
    """Audits the Pods of `namespace` (None: every namespace). The control plane's namespaces and `skipped` (the
    release's own, webhook.excludedNamespaces) are never sent to the webhook: their Pods are counted as skipped."""
    excluded = frozenset(EXCLUDED) | frozenset(skipped)
    namespaces = read_namespaces(api, namespace)
    result = Audit()
    for pods in pages(api, namespace):
        for pod in pods:
            result.add(pod, configuration, excluded, namespaces)
    return result
