"""The background audit (`serve --audit-interval`): every Pod of the cluster checked against the configuration
being served, every interval, on a thread of its own; never on the request path.

Each pass reads `holder.current`, so a hot reload of the catalogue or the policy applies to the next pass. It
sets the podpatterns_audit_* metrics: Pods breaking each (rule, kind, enforcement) — series of a rule that no
longer has findings are removed, and no label ever holds a Pod or a namespace — the Pods checked, the time of
the last pass that completed; with `write_reports` it writes the PolicyReports too. A pass that fails (the API
unreachable, forbidden, no CRD) is logged and counted as `podpatterns_audit_runs_total{result="failure"}`, and
the next one is tried an interval later; the server goes on serving.

Every replica audits: the metrics are per replica (alert on max() across them), and the reports it writes are
skipped when another replica already wrote the same results (webhook/cluster/policyreports.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from typing import Any, Callable, Iterable

from webhook.cluster import kubeclient, podaudit, policyreports
from webhook.core.configuration import ConfigurationHolder
from webhook.logs import event
from webhook.server.metrics import AUDIT_FINDINGS, AUDIT_LAST_SUCCESS_TIME, AUDIT_PODS, AUDIT_RUNS

MAX_NAMED = 5  # Pods named in the log line of a pass that could not audit some


def from_args(args: argparse.Namespace, api: Any, holder: ConfigurationHolder) -> AuditLoop | None:
    """The loop `serve --audit-interval` asks for (None without it). The server's own namespace is skipped like the
    control plane's: the chart's webhook configuration never sends its Pods."""
    if not args.audit_interval:
        return None
    own = args.namespace or kubeclient.current_namespace()
    return AuditLoop(api, holder, args.audit_interval, args.audit_write_reports,
                     ([own] if own else []) + list(args.audit_skip_namespace))


class AuditLoop:
    def __init__(self, api: Any, holder: ConfigurationHolder, interval: float, write_reports: bool = False,
                 skipped: Iterable[str] = (), clock: Callable[[], float] = time.time):
        self.api, self.holder, self.interval, self.write_reports = api, holder, interval, write_reports
        self.skipped = tuple(skipped)
        self.clock = clock
        self._series: set[tuple[str, str, str]] = set()  # the AUDIT_FINDINGS label sets set by the last pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """One pass; True when it completed. Never raises."""
        started = time.monotonic()
        try:
            found = podaudit.run(self.api, self.holder.current, None, self.skipped)
            self._publish(found.pods_by_label(), len(found.pods))
            written = None
            if self.write_reports:
                written = policyreports.write(self.api, found, policyreports.read(self.api, None), self.clock())
        except Exception as err:  # noqa: BLE001 - a failed pass is logged and counted; the next one may succeed
            AUDIT_RUNS.labels("failure").inc()
            event(logging.ERROR, "audit failed; retried at the next interval", error=_reason(err),
                  interval_seconds=self.interval)
            return False
        AUDIT_RUNS.labels("success").inc()
        AUDIT_LAST_SUCCESS_TIME.set(self.clock())
        fields: dict[str, Any] = {"pods": len(found.pods), "findings": len(found.findings),
                                  "skipped": dict(found.skipped), "seconds": round(time.monotonic() - started, 3)}
        if written is not None:
            fields["reports"] = written.as_dict()
        event(logging.INFO, "audit done", **fields)
        if found.errors:
            event(logging.WARNING, "audit: podpatterns could not audit some Pods", count=len(found.errors),
                  pods=[f"{p.namespace}/{p.name}: {p.error}" for p in found.errors[:MAX_NAMED]])
        return True

    def _publish(self, counts: dict[tuple[str, str, str], int], pods: int) -> None:
        for labels in self._series - set(counts):
            AUDIT_FINDINGS.remove(*labels)
        for labels, value in counts.items():
            AUDIT_FINDINGS.labels(*labels).set(value)
        self._series = set(counts)
        AUDIT_PODS.set(pods)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a pass under way ends with the process (a daemon thread)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            if self._stop.wait(self.interval):
                return


def _reason(err: Exception) -> str:
    """What went wrong, in a line: the API's own message for an API error (not the client's dump of headers)."""
    status, body = getattr(err, "status", None), getattr(err, "body", None)
    if isinstance(status, int) and body is not None:
        try:
            message = json.loads(body).get("message")
        except (TypeError, ValueError, AttributeError):
            message = None
        return f"the API answered {status} {getattr(err, 'reason', '')}: {message or body}"
    return f"{type(err).__name__}: {err}"
