"""The audit of the Pods that exist: which ones admission never sees, each other Pod's findings, and the totals.

Each Pod is judged by `webhook.core.audit` (admission's own plan for it, as if it were created now) with its
Namespace's labels and annotations. Pods that admission never decides are skipped, with the reason:

- `excluded-namespace`: the webhook configuration excludes the namespace (kube-system, kube-public,
  kube-node-lease, the release's own, and webhook.excludedNamespaces), so its Pods are never sent;
- `mirror`: a static Pod's API mirror, which admission never changes;
- `terminated`: phase Succeeded or Failed, a Pod that runs nothing any more and whose spec cannot change
  (a completed Job's Pods would otherwise stay flagged until they are garbage-collected);
- `unknown-namespace`: a Pod whose Namespace was not in the list read before the Pods (created meanwhile);
  admission never decides without the Namespace, and neither does the audit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from webhook.core import audit
from webhook.core.configuration import Configuration
from webhook.core.engine import NamespaceInfo
from webhook.core.findings import ENFORCED, Finding
from webhook.core.podkinds import MIRROR_ANNOTATION

SKIP_REASONS = ("excluded-namespace", "mirror", "terminated", "unknown-namespace")
TERMINATED = ("Succeeded", "Failed")


@dataclass(frozen=True)
class PodAudit:
    namespace: str
    name: str
    uid: str
    rules: tuple[str, ...]  # the policy rules that select the Pod, broken or not, in policy order
    findings: tuple[Finding, ...] = ()
    # The audit could not decide (a bug in podpatterns): admission would refuse such a Pod with code 500.
    error: str = ""

    @property
    def enforced(self) -> bool:
        """Admission would not admit the Pod as it is: it would inject what it lacks, or deny it."""
        return bool(self.error) or any(f.admission in ENFORCED for f in self.findings)


def skip_reason(pod: Mapping[str, Any], excluded: Iterable[str], namespaces: Mapping[str, NamespaceInfo]) -> str | None:
    """Why admission never decides this stored Pod (one of SKIP_REASONS), or None when the audit checks it."""
    meta = pod.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    if namespace in excluded:
        return "excluded-namespace"
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return "mirror"
    if (pod.get("status") or {}).get("phase") in TERMINATED:
        return "terminated"
    if namespace not in namespaces:
        return "unknown-namespace"
    return None


def check(pod: Mapping[str, Any], configuration: Configuration, namespace: NamespaceInfo) -> PodAudit:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    rules = tuple(rule.name for rule in configuration.policy.matching(namespace.labels, labels))
    identity = (namespace.name, str(meta.get("name") or ""), str(meta.get("uid") or ""))
    try:
        return PodAudit(*identity, rules, tuple(audit.audit(pod, configuration, namespace)))
    except Exception as err:  # noqa: BLE001 - one Pod the engine trips on must not hide the others
        return PodAudit(*identity, rules, error=f"podpatterns could not audit the Pod: {type(err).__name__}: {err}")


@dataclass
class Audit:
    """What one audit found: the Pods it checked (with and without findings) and the Pods it skipped, by reason."""

    pods: list[PodAudit] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, pod: Mapping[str, Any], configuration: Configuration, excluded: Iterable[str],
            namespaces: Mapping[str, NamespaceInfo]) -> None:
        reason = skip_reason(pod, excluded, namespaces)
        if reason is not None:
            self.skipped[reason] += 1
            return
        self.pods.append(check(pod, configuration, namespaces[(pod.get("metadata") or {}).get("namespace") or ""]))

    @property
    def findings(self) -> list[tuple[PodAudit, Finding]]:
        return [(pod, finding) for pod in self.pods for finding in pod.findings]

    @property
    def errors(self) -> list[PodAudit]:
        return [pod for pod in self.pods if pod.error]

    @property
    def enforced(self) -> bool:
        """Some Pod breaks an enforced rule: admission would inject what it lacks, or deny it."""
        return any(pod.enforced for pod in self.pods)

    def by_namespace(self) -> dict[str, list[PodAudit]]:
        grouped: dict[str, list[PodAudit]] = {}
        for pod in self.pods:
            grouped.setdefault(pod.namespace, []).append(pod)
        return grouped

    def pods_by_label(self) -> Counter[tuple[str, str, str]]:
        """How many Pods break each (rule, kind, enforcement): the metric's series, never a Pod or namespace."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for pod in self.pods:
            counts.update({(f.rule, f.kind, f.enforcement) for f in pod.findings})
        return counts

    def as_dict(self) -> dict[str, Any]:
        broken = {(pod.namespace, pod.name) for pod, _ in self.findings} | {(p.namespace, p.name) for p in self.errors}
        return {
            "checked": len(self.pods),
            "namespaces": len({pod.namespace for pod in self.pods}),
            "podsWithFindings": len(broken),
            "skipped": {reason: self.skipped[reason] for reason in SKIP_REASONS if self.skipped[reason]},
            "findings": [{"namespace": pod.namespace, "pod": pod.name, "uid": pod.uid, **finding.as_dict()}
                         for pod, finding in sorted(self.findings, key=lambda item: (item[0].namespace, item[0].name))],
            "errors": [{"namespace": pod.namespace, "pod": pod.name, "uid": pod.uid, "message": pod.error}
                       for pod in self.errors],
        }
