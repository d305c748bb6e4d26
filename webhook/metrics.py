"""Prometheus metrics of the webhook: requests by outcome, injections by entry, latency."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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


def count_injection(entries: list[str]) -> None:
    for entry in entries:
        INJECTIONS.labels(entry).inc()
