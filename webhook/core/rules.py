"""The cluster-wide policy as the engine reads it: rules selected by namespace and Pod labels.

The catalog layer loads and checks it from the policy file (webhook.catalog.policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

MISSING_LIMITS = ("default", "warn", "deny")
LIMITED = ("cpu", "memory")  # the limits every container must have under warn/deny


@dataclass(frozen=True)
class Selector:
    """A Kubernetes LabelSelector; the empty one matches everything."""

    labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.labels):
            return False
        for key, operator, values in self.expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class Resources:
    missing_limits: str  # default | warn | deny
    defaults: dict[str, dict[str, str]]  # "requests"/"limits" -> resource -> quantity


@dataclass(frozen=True)
class Rule:
    name: str
    namespace_selector: Selector = Selector()
    pod_selector: Selector = Selector()
    inject: tuple[str, ...] = ()
    mandatory: bool = False
    resources: Resources | None = None
    max_containers: int | None = None
    allowed_entries: frozenset[str] | None = None
    # enforce: as written; warn: what would deny is an admission warning, and inject adds nothing but a warning
    # for a Pod lacking the entries; audit: only reported (podpatterns audit, PolicyReports). See findings.py.
    enforcement: str = "enforce"
    # Narrower bounds for values Pods give: (entry, parameter, minimum or None, maximum or None), integer or quantity.
    parameter_bounds: tuple[tuple[str, str, Any, Any], ...] = ()

    def applies(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        return self.namespace_selector.matches(namespace_labels) and self.pod_selector.matches(pod_labels)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    environment_label: str = "env"
    # environment -> entry -> parameter -> typed value, used when the Pod sets none
    environments: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    origin: str = "no policy"
    # The text it was loaded from: a PatternTemplate change is judged by loading it again against the new catalogue.
    source: str = field(default="", compare=False, repr=False)

    def matching(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> list[Rule]:
        return [rule for rule in self.rules if rule.applies(namespace_labels, pod_labels)]


EMPTY = Policy()
