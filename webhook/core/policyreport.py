"""An audit's results as a PolicyReport (wgpolicyk8s.io/v1alpha2), one per namespace, as Kyverno writes them and
Policy Reporter shows them.

One result per Pod and policy rule that selects it, naming the Pod (`resources`: apiVersion v1, kind Pod,
name, namespace, uid):

| the Pod and the rule | result | severity | scored |
|---|---|---|---|
| a finding admission acts on: it would inject what the Pod lacks, or deny the Pod | fail | high (a mandatory entry, a denial), else medium | true |
| a finding admission only warns about (`missingLimits: warn`, enforcement warn) or only reports (enforcement audit) | warn | high for a mandatory entry, else low | false |
| the Pod breaks none of the rule | pass | | true |
| not decided: admission refuses the Pod earlier (another rule, a broken annotation) and stops there | skip | | true |
| podpatterns could not audit the Pod (a bug) | error | high | true |

`policy` is always "podpatterns" (the one Policy), `rule` the policy rule ("" — left out — for a Pod admission
refuses for a reason of its own, category `invalid`), `category` the kind of finding, `properties` the
rule's enforcement, what admission would do, whether the entry is mandatory and the entries concerned.
A result's `timestamp` is when it was first found: a result already in the namespace's report keeps its time,
so an audit that finds nothing new writes an identical report (and the writer skips it).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from webhook.core.findings import ENFORCED, Finding
from webhook.core.podaudits import PodAudit

API_VERSION = "wgpolicyk8s.io/v1alpha2"
GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"
KIND = "PolicyReport"
NAME = "podpatterns-audit"
SOURCE = POLICY = "podpatterns"
MANAGED_BY = ("app.kubernetes.io/managed-by", "podpatterns")
RESULTS = ("pass", "fail", "warn", "error", "skip")
# An object must stay well under etcd's 1.5 MiB: past this, results are left out (pass first), the summary still
# counts them, and an annotation says how many.
MAX_RESULTS_BYTES = 1_000_000
OMITTED = "podpatterns.io/omitted-results"
_ORDER = {"fail": 0, "error": 1, "warn": 2, "skip": 3, "pass": 4}  # what is kept first when results are left out


def result_of(finding: Finding) -> str:
    return "fail" if finding.admission in ENFORCED else "warn"


def severity_of(finding: Finding) -> str:
    if finding.mandatory or finding.admission == "deny":
        return "high"
    return "medium" if finding.admission in ENFORCED else "low"


def build(namespace: str, pods: Iterable[PodAudit], now: float, previous: Mapping[str, Any] | None = None
          ) -> dict[str, Any] | None:
    """The report of the namespace's audited Pods, or None when it has no result at all (no rule selects any of
    its Pods and none is refused). `now` (Unix time) stamps the results that `previous` (the report in the
    cluster) does not hold already."""
    seen = {_key(r): r.get("timestamp") for r in (previous or {}).get("results") or [] if isinstance(r, dict)}
    stamp = {"seconds": int(now), "nanos": int((now - int(now)) * 1e9)}
    results = []
    for pod in sorted(pods, key=lambda p: p.name):
        for result in _results(pod):
            result["timestamp"] = seen.get(_key(result)) or dict(stamp)
            results.append(result)
    if not results:
        return None
    summary = {name: sum(r["result"] == name for r in results) for name in RESULTS}
    results.sort(key=lambda r: _ORDER[r["result"]])  # stable: by Pod, then by rule, within each result
    kept, size = [], 0
    for result in results:
        size += len(json.dumps(result))
        if size > MAX_RESULTS_BYTES:
            break
        kept.append(result)
    metadata: dict[str, Any] = {"name": NAME, "namespace": namespace, "labels": dict([MANAGED_BY])}
    if len(kept) < len(results):
        metadata["annotations"] = {OMITTED: f"{len(results) - len(kept)} of {len(results)} results left out to keep "
                                            f"the report under 1 MB; podpatterns audit -n {namespace} lists every finding"}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "summary": summary, "results": kept}


def same(report: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    """Whether the report in the cluster already says what `report` says (its server-set metadata aside)."""
    meta, old = report["metadata"], existing.get("metadata") or {}
    return (existing.get("summary") == report["summary"] and (existing.get("results") or []) == report["results"]
            and (old.get("labels") or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]
            and (old.get("annotations") or {}).get(OMITTED) == (meta.get("annotations") or {}).get(OMITTED))


def _results(pod: PodAudit) -> list[dict[str, Any]]:
    resource = {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid}
    if pod.error:
        return [_result(resource, "", "error", pod.error, severity="high", category="error")]
    results = []
    for finding in pod.findings:
        properties = {"kind": finding.kind, "enforcement": finding.enforcement, "admission": finding.admission,
                      "mandatory": str(finding.mandatory).lower()}
        if finding.entries:
            properties["entries"] = ", ".join(finding.entries)
        results.append(_result(resource, finding.rule, result_of(finding), finding.message,
                               severity=severity_of(finding), category=finding.kind, properties=properties))
    denial = next((f for f in pod.findings if f.admission == "deny"), None)
    broken = {f.rule for f in pod.findings}
    for rule in pod.rules:
        if rule in broken:
            continue
        if denial is not None:
            by = f"rule {denial.rule}" if denial.rule else "a problem of the Pod's own"
            results.append(_result(resource, rule, "skip", f"not decided: admission refuses the Pod ({by}) before "
                                                           f"it comes to rule {rule}"))
        else:
            results.append(_result(resource, rule, "pass", f"the Pod meets rule {rule}"))
    return results


def _result(resource: dict[str, str], rule: str, result: str, message: str, severity: str = "", category: str = "",
            properties: dict[str, str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"source": SOURCE, "policy": POLICY}
    if rule:
        entry["rule"] = rule
    if category:
        entry["category"] = category
    if severity:
        entry["severity"] = severity
    entry.update({"result": result, "scored": result != "warn", "message": message, "resources": [dict(resource)]})
    if properties:
        entry["properties"] = properties
    return entry


def _key(result: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two results the same finding: rule, outcome, message and Pod (uid)."""
    uids = tuple(r.get("uid") for r in result.get("resources") or [] if isinstance(r, dict))
    return (result.get("rule"), result.get("result"), result.get("message"), uids)
