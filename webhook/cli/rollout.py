"""`podpatterns rollout`: restart the workloads of stale Pods one at a time, waiting for each to roll out."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webhook.cli import clusterargs
from webhook.core import rollouts

if TYPE_CHECKING:  # the client and the audit are imported only when the command runs
    from webhook.core.inventory import Group, Workload

DESCRIPTION = """Restarts the Deployments, StatefulSets and DaemonSets that own stale Pods (injected with an
older version of an entry than the catalogue's), as `kubectl rollout restart` does, one at a time: each must
finish rolling out (as `kubectl rollout status` decides) within --timeout before the next is restarted. Bare
Pods, Jobs and CronJobs are listed, never touched. Only stale workloads are ever restarted: --stale is the
default and only mode. Exit code: 0 every workload restarted rolled out (or nothing to restart), 1 one did not
(it is named, and the rest are not restarted), 2 could not run."""

UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration(text: str) -> float:
    """Seconds in a Go duration (10m, 90s, 1h30m, 1.5h, 500ms); 0 is no limit."""
    if text.strip() == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: give a number and a unit, e.g. 10m, 90s, 1h30m")
    return sum(float(n) * UNITS[u] for n, u in parts)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("rollout", help="restart the workloads of stale Pods, one at a time",
                                 description=DESCRIPTION)
    clusterargs.add_connection(parser)
    clusterargs.add_scope(parser)
    parser.add_argument("--stale", action="store_true",
                        help="restart the workloads of stale Pods (the default and only mode; accepted for symmetry "
                             "with status --stale)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be restarted, change nothing")
    parser.add_argument("--timeout", type=duration, default=600.0, metavar="DURATION",
                        help="how long each workload may take to roll out (default 10m; 90s, 1h…; 0 waits forever)")
    clusterargs.add_configuration(parser)
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Step:
    group: Group
    action: str  # "restart", or why not


def plan(api: Any, groups: tuple[Group, ...]) -> list[Step]:
    from webhook.cluster import workloads

    steps = []
    for group in groups:
        kind = group.workload.kind
        if kind not in rollouts.RESTARTABLE:
            steps.append(Step(group, f"not restarted: {rollouts.left_to_you(kind)}"))
            continue
        blocked = rollouts.blocker(kind, workloads.read(api, group.workload))
        steps.append(Step(group, f"not restarted: {blocked}" if blocked else "restart"))
    return steps


def show(steps: list[Step], every_namespace: bool) -> str:
    lead = ["NAMESPACE"] if every_namespace else []
    rows = [[*([s.group.workload.namespace] if every_namespace else []), s.group.workload.label,
             ",".join(sorted({r.entry for r in s.group.rows() if r.state == "stale"})),
             f"{s.group.stale}/{len(s.group.pods)}", s.action] for s in steps]
    return clusterargs.render_table([*lead, "WORKLOAD", "STALE ENTRIES", "STALE PODS", "ACTION"], rows)


def _where(workload: Workload) -> str:
    return f"{workload.label} in namespace {workload.namespace}"


@clusterargs.cluster_command("rollout")
def run(args: argparse.Namespace) -> int:
    from webhook.cluster import workloads

    api = clusterargs.connect(args)
    configuration = clusterargs.configuration(args, api)
    namespace = clusterargs.namespaces(args)
    # Staleness only: a Pod lacking a mandatory entry is status's to flag (and needs the Namespaces read).
    stale = workloads.take_inventory(api, configuration, namespace, mandatory=False).only_stale()
    if not stale.groups:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        print(f"No stale Pods in {where}: nothing to restart.")
        return clusterargs.OK
    steps = plan(api, stale.groups)
    print(show(steps, namespace is None), end="")
    todo = [s.group.workload for s in steps if s.action == "restart"]
    if args.dry_run:
        print(f"dry run: {len(todo)} workload(s) would be restarted, in this order; nothing changed")
        return clusterargs.OK
    timeout = args.timeout or None
    for done, workload in enumerate(todo):
        at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        generation = int((workloads.restart(api, workload, at).get("metadata") or {}).get("generation") or 0)
        print(f"{_where(workload)}: restarted ({rollouts.RESTARTED_AT}={at})", flush=True)
        progress = workloads.wait(api, workload, generation, timeout,
                                  lambda message, w=workload: print(f"{_where(w)}: {message}", flush=True))
        if not progress.done:
            rest = [w.label for w in todo[done + 1:]]
            why = "failed" if progress.failed else f"did not finish rolling out within {_seconds(args.timeout)}"
            print(f"podpatterns rollout: {_where(workload)} {why}: {progress.message}; stopped there"
                  + (f", not restarted: {', '.join(rest)}" if rest else ""), file=sys.stderr)
            return clusterargs.FOUND
        print(f"{_where(workload)}: {progress.message}", flush=True)
    print(f"{len(todo)} workload(s) restarted and rolled out")
    return clusterargs.OK


def _seconds(value: float) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{int(value // 60)}m" if value % 3600 else f"{int(value // 3600)}h"
    return f"{value:g}s"
