"""`podpatterns check`: is the installed release healthy, one verdict a line, in the style of `linkerd check`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.cli import clusterargs

DESCRIPTION = """Checks an installed release: the Kubernetes API and version, the MutatingWebhookConfiguration
(failurePolicy, timeoutSeconds, reinvocationPolicy, its own namespace and kube-system excluded, a caBundle that
verifies the serving certificate in the release's TLS Secret, and with --webhook-url the one served there), the
replicas (ready, at least two, a PodDisruptionBudget, each one's last configuration reload, read from its /metrics
through the apiserver's pod proxy), the configuration (catalogue and policy load, Namespace annotations name known
entries, the guard where failurePolicy Ignore meets mandatory rules) and the Pods (stale, lacking mandatory entries,
flagged). Exit code: 0 every check passed (warnings allowed), 1 a check failed, 2 a check could not be made (the
API unreachable or refusing) or the command could not run."""

SYMBOLS = {"ok": "✔", "warning": "‼", "failure": "✘", "unchecked": "✘"}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("check", help="check an installed release, one verdict a line",
                                 description=DESCRIPTION)
    clusterargs.add_connection(parser)
    clusterargs.add_configuration(parser)
    # The release always: `check` judges what is installed, by the release's own catalogue and policy.
    parser.add_argument("-n", "--namespace", dest="release_namespace", metavar="NS",
                        help="namespace of the release (default podpatterns; the same as --release-namespace)")
    parser.add_argument("--webhook-url", metavar="URL",
                        help="also connect to the webhook there and verify the certificate it serves with the caBundle, "
                             "for the Service's DNS name (e.g. https://127.0.0.1:8443 after kubectl -n NS port-forward "
                             "svc/NAME 8443:443)")
    parser.set_defaults(func=run, release="podpatterns")


@clusterargs.cluster_command("check")
def run(args: argparse.Namespace) -> int:
    from webhook.cluster import checks  # the client only when run

    if args.catalog or args.policy:
        raise clusterargs.CommandFailed("check judges the release by its own catalogue and policy: drop --catalog "
                                        "and --policy (podpatterns policy validate checks a file)")
    try:
        api = clusterargs.connect(args)
    except clusterargs.CommandFailed as err:
        _print(checks.Result("kubernetes-api", "can initialize the client", checks.UNCHECKED, (str(err),)), None)
        _summary(clusterargs.FAILED)
        return clusterargs.FAILED

    def configuration():
        try:
            return clusterargs.configuration(args, api)
        except clusterargs.CommandFailed as err:
            raise checks.ConfigurationBroken(str(err)) from None

    target = checks.Target(args.release, args.release_namespace, args.webhook_url)
    statuses, group = set(), None
    for result in checks.Checker(api, target, configuration).run():
        _print(result, group)
        group = result.group
        statuses.add(result.status)
    code = (clusterargs.FAILED if checks.UNCHECKED in statuses else
            clusterargs.FOUND if checks.FAILURE in statuses else clusterargs.OK)
    _summary(code)
    return code


def _print(result: Any, group: str | None) -> None:
    if result.group != group:
        print(("\n" if group else "") + f"{result.group}\n{'-' * len(result.group)}")
    print(f"{SYMBOLS[result.status]} {result.check}")
    for detail in result.details:
        print(f"    {detail}")
    if result.hint:
        print(f"    {result.hint}")
    sys.stdout.flush()


def _summary(code: int) -> None:
    print(f"\nStatus check results are {SYMBOLS['ok'] if code == clusterargs.OK else SYMBOLS['failure']}")
