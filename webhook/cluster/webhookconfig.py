"""The MutatingWebhookConfiguration that points the apiserver at a running podpatterns server (url mode).

The same safe scope as the chart's (README, "Which Pods reach the webhook"): Pods that ask by annotation,
Pods of Namespaces labelled `<prefix>/injection=enabled`, and UPDATEs of Pods podpatterns injected. Any
other Pod matches no webhook, so a server that is down blocks only what uses podpatterns. A policy's
rules need their own entries, which the chart renders from the policy.
"""

from __future__ import annotations

from typing import Any

NAME = "podpatterns"
WEBHOOK = "inject.podpatterns.io"
EXCLUDED = ["kube-system", "kube-public", "kube-node-lease"]


def mutating_webhook_configuration(url: str, ca_bundle: str, timeout_seconds: int = 5,
                                   prefix: str = "podpatterns.io") -> dict[str, Any]:
    opted_in = {"key": f"{prefix}/injection", "operator": "In", "values": ["enabled"]}
    not_opted_in = {"key": f"{prefix}/injection", "operator": "NotIn", "values": ["enabled"]}
    system = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXCLUDED}
    asks = f"has(object.metadata.annotations) && '{prefix}/inject' in object.metadata.annotations"
    injected = f"has(oldObject.metadata.annotations) && '{prefix}/status' in oldObject.metadata.annotations"

    def entry(name: str, operation: str, selector: list[dict[str, Any]], condition: str | None) -> dict[str, Any]:
        webhook: dict[str, Any] = {
            "name": name,
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": [operation],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [system, *selector]},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "IfNeeded",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": timeout_seconds,
        }
        if condition:
            webhook["matchConditions"] = [{"name": name.split(".")[0], "expression": condition}]
        return webhook

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            entry(WEBHOOK, "CREATE", [not_opted_in], asks),
            entry(f"namespace.{WEBHOOK}", "CREATE", [opted_in], None),
            entry("update.podpatterns.io", "UPDATE", [], injected),
        ],
    }
