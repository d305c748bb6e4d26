"""Prometheus metrics of the webhook: requests by outcome, injections by entry, latency, configuration reloads."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

OUTCOMES = ("injected", "unchanged", "denied", "error", "invalid", "unavailable")

REQUESTS = Counter("podpatterns_admission_requests", "AdmissionReview requests answered, by outcome", ["outcome"])
INJECTIONS = Counter("podpatterns_injections", "Catalogue entries injected into Pods, by entry", ["entry"])
LATENCY = Histogram(
    "podpatterns_admission_duration_seconds",
    "Time to answer one AdmissionReview, from the body read to the response encoded",
    buckets=(0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
# Children bound once: a labels() lookup per request is measurable at thousands of requests a second.
BY_OUTCOME = {outcome: REQUESTS.labels(outcome) for outcome in OUTCOMES}

# Reviews whose Namespace was not in the cache and waited for its lookup (webhook/cluster/namespacecache.py), by
# result: found (decided with it), not_found, error, timeout (refused: outcome unavailable).
LOOKUP_RESULTS = ("found", "not_found", "error", "timeout")
LOOKUPS = Counter("podpatterns_namespace_lookups", "Reviews that waited for a Namespace the cache had not seen, "
                  "by the lookup's result", ["result"])
NAMESPACE_LOOKUPS = {result: LOOKUPS.labels(result) for result in LOOKUP_RESULTS}

# Hot reload of the catalogue and policy (webhook/server/reload.py). Alert on the gauge: 0 means files on disk
# that do not load, while the last good configuration is still served.
CONFIG_RELOADS = Counter("podpatterns_config_reloads", "Reloads of the catalogue and policy after their files changed, "
                         "by result", ["result"])
CONFIG_LAST_SUCCESS = Gauge("podpatterns_config_last_reload_success",
                            "1 if the catalogue and policy on disk are the ones served, 0 if the last reload failed")
CONFIG_LAST_SUCCESS_TIME = Gauge("podpatterns_config_last_reload_success_timestamp_seconds",
                                 "When the configuration being served was loaded (Unix time)")
for _result in ("success", "failure"):
    CONFIG_RELOADS.labels(_result)  # both series exist from the start, so increase() sees the first reload
# A server only starts with a configuration that loads.
CONFIG_LAST_SUCCESS.set(1)
CONFIG_LAST_SUCCESS_TIME.set_to_current_time()

# The serving certificate the server holds (webhook/server/tlsreload.py sets it at start and at every reload). Alert
# on it approaching: a renewal (self-managed, cert-manager) that keeps failing shows here weeks before the apiserver
# refuses the webhook.
CERTIFICATE_EXPIRY = Gauge("podpatterns_certificate_expiry_timestamp_seconds",
                           "When the serving certificate being served expires (Unix time)")


def count_injection(entries: list[str]) -> None:
    for entry in entries:
        _injections(entry).inc()


@cache  # the children by entry name, as BY_OUTCOME: names come from the catalogues loaded, a handful
def _injections(entry: str) -> Counter:
    return INJECTIONS.labels(entry)

# The background audit (serve --audit-interval; webhook/server/auditloop.py): what the last pass found, by policy
# rule and kind of finding. Labels are bounded by the policy's rules, never by Pods or namespaces.
AUDIT_FINDINGS = Gauge("podpatterns_audit_findings", "Pods breaking a policy rule at the last audit, by rule, kind "
                       "of finding and the rule's enforcement", ["rule", "kind", "enforcement"])
AUDIT_PODS = Gauge("podpatterns_audit_pods", "Pods the last audit checked")
AUDIT_LAST_SUCCESS_TIME = Gauge("podpatterns_audit_last_success_timestamp_seconds",
                                "When the last audit pass completed (Unix time); 0 before the first")
AUDIT_RUNS = Counter("podpatterns_audit_runs", "Audit passes, by result", ["result"])
for _result in ("success", "failure"):
    AUDIT_RUNS.labels(_result)
