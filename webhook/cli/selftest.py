"""`podpatterns selftest`: the chart's `helm test`, a dry-run Pod that must come back injected (not listed in --help)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from webhook.cli import clusterargs
from webhook.core.keys import DEFAULT_PREFIX

DESCRIPTION = """Asks the apiserver for a server-side dry-run creation (dryRun=All: every webhook and admission policy
runs, nothing is stored) of a Pod annotated <prefix>/inject: ENTRY in NAMESPACE, and checks it comes back injected:
the status annotation lists the entry and the Pod holds a container it was sent without. The chart's helm test hook
runs it; it needs create on pods in NAMESPACE. Exit code: 0 injected, 1 not injected or refused at admission, 2 could
not ask (no cluster, forbidden)."""


def add_parser(commands: Any) -> None:
    # No help=: the command is the chart's, documented in its README, and not listed among the user's commands.
    parser = commands.add_parser("selftest", description=DESCRIPTION)
    clusterargs.add_connection(parser)
    parser.add_argument("-n", "--namespace", default="default",
                        help="namespace of the dry-run Pod; it must be in the webhook's scope (default default)")
    parser.add_argument("--entry", default="log-shipper", help="the catalogue entry it asks for (default log-shipper)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"annotation prefix (default {DEFAULT_PREFIX})")
    parser.add_argument("--image", help="image of its app container, never pulled (default registry.k8s.io/pause:3.10)")
    parser.set_defaults(func=run)


@clusterargs.cluster_command("selftest")
def run(args: argparse.Namespace) -> int:
    from webhook.cluster import selftest

    api = clusterargs.connect(args)
    outcome = selftest.dry_run(api, args.namespace, args.entry, args.prefix, args.image or selftest.DEFAULT_IMAGE)
    where = f"a dry-run Pod in namespace {args.namespace} asking for {args.entry}"
    print(f"{'✔' if outcome.injected else '✘'} {where} {outcome.message}")
    if outcome.status is not None:
        print(f"    {args.prefix}/status: {json.dumps(outcome.status, separators=(',', ':'))}")
    if outcome.added:
        print(f"    containers added: {', '.join(outcome.added)}")
    for warning in outcome.warnings:
        print(f"    warning: {warning}")
    if not outcome.injected:
        print(f"    hint: podpatterns check -n RELEASE_NAMESPACE says why the webhook did not answer; is {args.namespace} "
              "excluded, or outside webhook.namespaceSelector/objectSelector?")
    return clusterargs.OK if outcome.injected else clusterargs.FOUND
