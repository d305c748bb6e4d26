"""`podpatterns status`: which Pods carry which entries, by workload, stale or current, and which are flagged."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.cli import clusterargs

DESCRIPTION = """Lists the Pods that carry podpatterns entries, grouped by the workload that owns them: the
entries, the template digest they were injected with, and whether it is still the catalogue's (current) or
not (stale). It flags Pods whose status annotation lists an entry whose containers they lack (forged), an
entry the catalogue no longer has, and Pods a mandatory policy rule selects that lack its entries.
Exit code: 0 nothing stale or flagged, 1 something stale or flagged (in what is shown), 2 could not run."""


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("status", help="which Pods carry which entries, stale or current",
                                 description=DESCRIPTION)
    clusterargs.add_connection(parser)
    clusterargs.add_scope(parser)
    clusterargs.add_output(parser)
    parser.add_argument("--stale", action="store_true", help="only the workloads that have stale Pods")
    clusterargs.add_configuration(parser)
    parser.set_defaults(func=run)


@clusterargs.cluster_command("status")
def run(args: argparse.Namespace) -> int:
    from webhook.cluster import workloads  # the client and the audit only when run

    api = clusterargs.connect(args)
    configuration = clusterargs.configuration(args, api)
    namespace = clusterargs.namespaces(args)
    found = workloads.take_inventory(api, configuration, namespace, clusterargs.never_sent(args, api))
    if args.stale:
        found = found.only_stale()
    if not found.groups and args.output == "table":
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        what = "stale Pods" if args.stale else "Pods with podpatterns entries"
        print(f"No {what} found in {where}.", file=sys.stderr)  # as kubectl: nothing on stdout
    else:
        clusterargs.emit(found.as_dict(), args.output, lambda data: table(data, every_namespace=namespace is None))
    return clusterargs.FOUND if found.wrong else clusterargs.OK


def table(data: dict[str, Any], every_namespace: bool = False) -> str:
    """One row per workload, entry, digest and state; then the flagged Pods, one row per problem."""
    lead = ["NAMESPACE"] if every_namespace else []
    rows = [[*([w["namespace"]] if every_namespace else []), f"{w['kind'].lower()}/{w['name']}", e["entry"] or "-",
             e["digest"] or "-", e["state"], f"{e['pods']}/{w['pods']}"]
            for w in data["workloads"] for e in w["entries"]]
    text = clusterargs.render_table([*lead, "WORKLOAD", "ENTRY", "DIGEST", "STATE", "PODS"], rows)
    problems = [[*([w["namespace"]] if every_namespace else []), p["pod"], f"{w['kind'].lower()}/{w['name']}",
                 p["state"], p["message"]]
                for w in data["workloads"] for p in w["problems"]]
    if problems:
        text += "\n" + clusterargs.render_table([*lead, "POD", "WORKLOAD", "PROBLEM", "DETAIL"], problems)
    return text
