"""`podpatterns audit`: every existing Pod checked against the policy and catalogue, exactly as admission would
decide it now; optionally written as PolicyReports. Also the `serve` options of the same audit run in the
background (webhook/server/auditloop.py)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from webhook.cli import clusterargs
from webhook.core.findings import ENFORCED

DESCRIPTION = """Checks the Pods that exist against the current policy and catalogue, as admission would decide
each one if it were created now (with its Namespace's labels and annotations): mandatory entries missing (Pods
created before a rule, or while the webhook failed open), containers without limits where a rule warns or
denies, Pods over a rule's container cap, entries a rule's allowedEntries forbids, and Pods admission would
refuse for a reason of their own. Each finding names the Pod, the rule, the rule's enforcement and what
admission would do (inject, deny, warn, or only report). Pods admission never sees are skipped: those of
kube-system, kube-public, kube-node-lease, the release's namespace (--release) and --skip-namespace; mirror
Pods; and terminated Pods (phase Succeeded or Failed).
Exit code: 0 no Pod breaks an enforced rule (findings admission only warns about or reports may be shown),
1 some Pod breaks an enforced rule (admission would inject into it or deny it) or could not be audited,
2 could not run (no cluster, forbidden, a broken configuration, no PolicyReport CRD with --write-reports)."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("audit", help="check existing Pods against the policy, as admission would",
                                 description=DESCRIPTION)
    clusterargs.add_connection(parser)
    clusterargs.add_scope(parser)
    clusterargs.add_output(parser)
    parser.add_argument("--write-reports", action="store_true",
                        help="also write the results as PolicyReports (wgpolicyk8s.io/v1alpha2), one named "
                             "podpatterns-audit per namespace; needs the CRD")
    parser.add_argument("--skip-namespace", action="append", default=[], metavar="NS",
                        help="skip this namespace's Pods too: one the webhook is never called for (the chart's "
                             "webhook.excludedNamespaces); repeatable")
    clusterargs.add_configuration(parser)
    parser.set_defaults(func=run)


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("background audit of existing Pods (metrics podpatterns_audit_*; see podpatterns "
                                     "audit --help)")
    group.add_argument("--audit-interval", type=_interval, default=0.0, metavar="SECONDS",
                       help="audit every Pod of the cluster against the configuration being served this often "
                            "(default 0: off); needs the Kubernetes API (RBAC: list pods and namespaces)")
    group.add_argument("--audit-write-reports", action="store_true",
                       help="also write each audit as PolicyReports, one per namespace (needs --audit-interval and "
                            "the PolicyReport CRD)")
    group.add_argument("--audit-skip-namespace", action="append", default=[], metavar="NS",
                       help="namespaces the webhook is never called for, besides kube-system, kube-public, "
                            "kube-node-lease and the server's own; repeatable")


def skipped_namespaces(args: argparse.Namespace, api: Any) -> tuple[str, ...]:
    """Namespaces the webhook is never called for besides the control plane's: with --release, those its webhook
    configuration excludes; and those given."""
    return clusterargs.never_sent(args, api) + tuple(args.skip_namespace)


@clusterargs.cluster_command("audit")
def run(args: argparse.Namespace) -> int:
    from webhook.cluster import podaudit, policyreports  # the client only when run

    api = clusterargs.connect(args)
    configuration = clusterargs.configuration(args, api)
    namespace = clusterargs.namespaces(args)
    existing = None
    if args.write_reports:  # before the audit: a cluster without the CRD says so at once
        try:
            existing = policyreports.read(api, namespace)
        except policyreports.ReportsUnavailable as err:
            raise clusterargs.CommandFailed(str(err)) from None
    found = podaudit.run(api, configuration, namespace, skipped_namespaces(args, api))
    data = found.as_dict()
    if existing is not None:
        written = policyreports.write(api, found, existing, time.time())
        data["reports"] = written.as_dict()
    where = "any namespace" if namespace is None else f"namespace {namespace}"
    if args.output == "table":
        if data["findings"] or data["errors"]:
            print(table(data, every_namespace=namespace is None), end="")
        print(summary(data, where), file=sys.stderr)  # as kubectl: counts and notes on stderr
        if existing is not None:
            print(written.sentence(), file=sys.stderr)
    else:
        clusterargs.emit(data, args.output, table)
    return clusterargs.FOUND if found.enforced else clusterargs.OK


def table(data: dict[str, Any], every_namespace: bool = True) -> str:
    """One row per finding: the Pod, the rule, the kind, the rule's enforcement, what admission would do, why."""
    lead = ["NAMESPACE"] if every_namespace else []
    rows = [[*([f["namespace"]] if every_namespace else []), f["pod"], f["rule"] or "-", f["kind"], f["enforcement"],
             f["admission"], f["message"]] for f in data["findings"]]
    rows += [[*([e["namespace"]] if every_namespace else []), e["pod"], "-", "error", "-", "deny", e["message"]]
             for e in data["errors"]]
    return clusterargs.render_table([*lead, "POD", "RULE", "KIND", "ENFORCEMENT", "ADMISSION", "MESSAGE"], rows)


def summary(data: dict[str, Any], where: str) -> str:
    findings = data["findings"]
    enforced = sum(f["admission"] in ENFORCED for f in findings) + len(data["errors"])
    said = (f"{len(findings)} finding(s) on {data['podsWithFindings']} Pod(s), {enforced} that admission would "
            f"not have let be (inject, default or deny)" if findings or data["errors"] else "no findings")
    skipped = data["skipped"]
    why = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
    tail = f"; skipped {sum(skipped.values())} ({why})" if skipped else ""
    return f"{data['checked']} Pod(s) checked in {where}: {said}{tail}."


def _interval(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a number of seconds, got {text}")
    return value
