"""The namespaces an installed release's webhook is never called for, read off its MutatingWebhookConfiguration."""

from __future__ import annotations

import json
from typing import Any

from webhook.cluster import kubeclient

INSTANCE = "app.kubernetes.io/instance"
NAME_LABEL = "kubernetes.io/metadata.name"


def release_never_sent(api: Any, release: str, namespace: str) -> tuple[str, ...]:
    """The namespaces every webhook of the release's configuration excludes by name (its own, the control plane's,
    webhook.excludedNamespaces): Pods there never reach admission, so no rule is held against them. Raises the
    client's ApiException (e.g. 403: the user may not list webhook configurations)."""
    from kubernetes import client

    response = client.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration(
        label_selector=f"{INSTANCE}={release}", _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
    webhooks = [w for item in json.loads(response.data).get("items") or [] for w in item.get("webhooks") or []]
    return never_sent(webhooks, namespace)


def never_sent(webhooks: list[dict[str, Any]], namespace: str) -> tuple[str, ...]:
    """Of the names the webhooks' namespaceSelectors rule out (and the release's own `namespace`), those that every
    webhook excludes."""
    named: set[str] = {namespace}
    for webhook in webhooks:
        for expression in (webhook.get("namespaceSelector") or {}).get("matchExpressions") or []:
            if expression.get("key") == NAME_LABEL and expression.get("operator") == "NotIn":
                named |= set(expression.get("values") or [])
    return tuple(sorted(n for n in named if all(excludes(w, n) for w in webhooks)) or [namespace])


def excludes(webhook: dict[str, Any], namespace: str) -> bool:
    """Whether the webhook is never called for Pods of `namespace`: its namespaceSelector rules the Namespace out by
    its name label (NotIn, In without it, matchLabels of another name), or a matchCondition compares request.namespace
    with the name."""
    selector = webhook.get("namespaceSelector") or {}
    for expression in selector.get("matchExpressions") or []:
        if expression.get("key") != NAME_LABEL:
            continue
        values, operator = expression.get("values") or [], expression.get("operator")
        if (operator == "NotIn" and namespace in values) or (operator == "In" and namespace not in values) \
                or operator == "DoesNotExist":
            return True
    if NAME_LABEL in (selector.get("matchLabels") or {}) and selector["matchLabels"][NAME_LABEL] != namespace:
        return True
    return any("request.namespace" in (c.get("expression") or "")
               and (f"'{namespace}'" in c["expression"] or f'"{namespace}"' in c["expression"])
               for c in webhook.get("matchConditions") or [])
