"""The audit of a Pod that exists: how it breaks the current policy, decided exactly as admission decides."""

from __future__ import annotations

from typing import Any

from webhook.core import engine
from webhook.core.configuration import Configuration
from webhook.core.findings import Finding


def audit(pod: Any, configuration: Configuration, namespace: engine.NamespaceInfo) -> list[Finding]:
    """The findings of admission's own plan for the stored Pod, as if it were created now. A Pod admission would
    refuse for a reason of its own (an unknown entry, a parameter out of bounds) is a finding of kind invalid."""
    plan = engine.plan(pod, configuration.catalogue, configuration.settings, namespace.name, "", namespace,
                       configuration.policy)
    findings = list(plan.findings)
    if plan.denial is not None and not any(f.admission == "deny" for f in findings):
        findings.append(Finding("", "invalid", plan.denial, "enforce", "deny"))
    return findings
