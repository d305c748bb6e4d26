"""Injection without a cluster: the engine run over the Pods of a manifest file, like `istioctl kube-inject`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, TextIO

import jsonpatch
import yaml

from webhook.cli import workloads
from webhook.core import engine
from webhook.core.configuration import Configuration
from webhook.core.namespaces import namespaces_in


class ManifestError(ValueError):
    pass


@dataclass
class Result:
    doc: Any  # the document, injected where it holds a Pod
    target: workloads.Target | None
    plan: engine.Plan | None


def read_manifests(stream: TextIO) -> list[Any]:
    try:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    except yaml.YAMLError as err:
        raise ManifestError(f"invalid YAML: {err}") from None


def run(docs: list[Any], configuration: Configuration, namespace: str) -> list[Result]:
    namespaces = namespaces_in(docs)
    results = []
    for doc in docs:
        target = workloads.find(doc, namespace)
        if target is None:
            results.append(Result(doc, None, None))
            continue
        plan = engine.plan(target.pod, configuration.catalogue, configuration.settings, target.namespace,
                           target.name_for_pod, namespaces.lookup(target.namespace), configuration.policy)
        if plan.ops and plan.denial is None:
            # Applied with jsonpatch, an implementation independent of the engine that wrote the ops.
            # Deep copies: the ops share constant parts of the catalogue's templates (see template.render).
            injected = jsonpatch.apply_patch(copy.deepcopy(target.pod), copy.deepcopy(plan.ops))
            doc = workloads.put(doc, target, injected)
        results.append(Result(doc, target, plan))
    return results


def explain(result: Result, keys_inject: str) -> str:
    target, plan = result.target, result.plan
    if target is None or plan is None:
        return ""
    lines = [f"{target.label}:"]
    if plan.denial is not None:
        lines.append(f"  denied: {plan.denial}")
    elif not plan.decisions and not plan.notes:
        lines.append(f"  nothing to inject: no {keys_inject} annotation on the Pod or its Namespace, and no policy rule adds one")
    for decision in plan.decisions:
        enforcement = f" [enforcement {decision.enforcement}]" if decision.enforcement else ""
        if decision.injected:
            again = f"; {decision.reason}" if decision.reason else ""
            lines.append(f"  {decision.entry}: injected, {decision.source}{enforcement}{again}")
            for name, (value, origin) in decision.parameters.items():
                lines.append(f"    {name} = {_text(value)}  ({origin})")
        elif plan.denial is None:
            lines.append(f"  {decision.entry}: not injected, {decision.reason}{enforcement}")
    if plan.denial is None:
        lines += [f"  {note}" for note in plan.notes]
    # The rules the Pod breaks, and what each rule's enforcement makes of it (injections are listed above).
    lines += [f"  rule {f.rule} [enforcement {f.enforcement}]: {f.kind}: admission {_ADMISSION[f.admission]}"
              for f in plan.findings if f.admission not in ("inject", "default")]  # shown above, or as a note
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


_ADMISSION = {"deny": "denies the Pod", "warn": "admits it with a warning", "report": "admits it; the audit reports it"}


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
