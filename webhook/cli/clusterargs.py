"""What the day-two commands share: the connection, the scope, the configuration they judge by, and output.

Exit codes of every command that talks to a cluster: 0 nothing wrong, 1 something found wrong, 2 the command
could not do its job (no cluster, forbidden, a broken catalogue or policy).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any, Callable, Iterable, Sequence

import yaml

from webhook.catalog import catalogue, policy
from webhook.cluster import kubeclient, kubeversion, release
from webhook.core import rules
from webhook.core.configuration import Configuration
from webhook.core.engine import Settings
from webhook.core.keys import DEFAULT_PREFIX, AnnotationKeys

OK, FOUND, FAILED = 0, 1, 2


class CommandFailed(Exception):
    """The command cannot do its job; the message says why and what to do."""


def add_connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (as kubectl: --kubeconfig, else $KUBECONFIG, else ~/.kube/config; "
                                      "in a Pod, its service account)")
    group.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file to use")
    group.add_argument("--context", help="kubeconfig context to use (default: its current context)")


def add_scope(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="only this namespace (default: the context's namespace, else default)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                        help="table (default) for people, json or yaml for scripts")


def add_configuration(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the catalogue and policy to judge by (as serve reads them)")
    group.add_argument("--release", metavar="NAME",
                       help="read them from this installed Helm release's ConfigMaps (in --release-namespace)")
    group.add_argument("--release-namespace", metavar="NS", default="podpatterns",
                       help="namespace of --release (default podpatterns)")
    group.add_argument("--catalog", action="append", default=[], metavar="DIR",
                       help="directory of PatternTemplate files, as serve --catalog")
    group.add_argument("--policy", metavar="FILE", help="policy file, as serve --policy")
    group.add_argument("--prefix", help=f"annotation prefix (default: the release's setting, else {DEFAULT_PREFIX})")


def connect(args: argparse.Namespace) -> Any:
    from kubernetes.config import ConfigException

    try:
        return kubeclient.api_client(args.kubeconfig, args.context)
    except (ConfigException, OSError) as err:
        raise CommandFailed(f"no cluster to talk to: {err} (give --kubeconfig or --context, or set KUBECONFIG)") from None


def namespaces(args: argparse.Namespace) -> str | None:
    """The one namespace the command looks at, or None for all of them."""
    if getattr(args, "all_namespaces", False):
        return None
    if args.namespace:
        return args.namespace
    return _context_namespace(args) or "default"


def _context_namespace(args: argparse.Namespace) -> str | None:
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeclient.kubeconfig_path(args.kubeconfig))
    except Exception:  # no kubeconfig (in a Pod): the Pod's own namespace
        return kubeclient.current_namespace()
    chosen = next((c for c in contexts if c["name"] == args.context), None) if args.context else current
    return ((chosen or {}).get("context") or {}).get("namespace")


def configuration(args: argparse.Namespace, api: Any) -> Configuration:
    """The catalogue and policy from --release, or from --catalog/--policy (else the built-ins, no policy);
    the annotation prefix and the cluster's native-sidecar support as serve would have them."""
    settings: dict[str, Any] = {}
    try:
        if args.release:
            files = release.read(api, args.release, args.release_namespace)
            settings = files.settings
            entries = catalogue.Catalogue(catalogue.builtin_entries() | catalogue.load_texts(files.catalogue))
            checked = policy.load_text(files.policy, files.policy_origin, entries) if files.policy else rules.EMPTY
        else:
            entries = catalogue.load(args.catalog)
            checked = policy.load(args.policy, entries) if args.policy else rules.EMPTY
    except release.ReleaseNotFound as err:
        raise CommandFailed(str(err)) from None
    except catalogue.CatalogueError as err:
        raise CommandFailed(f"the catalogue is broken:\n{err}") from None
    except policy.PolicyError as err:
        raise CommandFailed(f"the policy is broken:\n{err}") from None
    prefix = args.prefix or settings.get("prefix") or DEFAULT_PREFIX
    version = settings.get("kube-version") or None
    native = kubeversion.native_sidecars(str(version) if version else None, api)
    # The server's rewrite of image registries changes what injected containers hold, so claims are verified with it.
    registry = settings.get("image-registry") or None
    secrets = settings.get("image-pull-secret") or []
    secrets = tuple(secrets if isinstance(secrets, list) else [secrets])
    return Configuration(entries, Settings(AnnotationKeys(prefix), native, registry, secrets), checked)


def never_sent(args: argparse.Namespace, api: Any) -> tuple[str, ...]:
    """With --release, the namespaces its webhook is never called for (read off its MutatingWebhookConfiguration:
    the release's own, webhook.excludedNamespaces); the control plane's are always left out by the callers. A user
    who may not read webhook configurations gets the release's namespace alone, and a note saying so."""
    if not args.release:
        return ()
    from kubernetes.client.exceptions import ApiException

    from webhook.cluster import webhookscope

    try:
        return webhookscope.release_never_sent(api, args.release, args.release_namespace)
    except ApiException as err:
        if err.status != 403:
            raise
        print(f"note: cannot list mutatingwebhookconfigurations (forbidden): only namespace {args.release_namespace} "
              f"and the control plane's are taken as never sent to the webhook", file=sys.stderr)
        return (args.release_namespace,)


def cluster_command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Runs a command, turning what stops it (no cluster, an API error, a broken configuration) into a one-line
    reason on stderr and exit code 2."""

    def wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            try:
                return func(args)
            except CommandFailed as err:
                print(f"podpatterns {name}: {err}", file=sys.stderr)
            except Exception as err:  # the client's errors, named for a person
                reason = api_problem(err)
                if reason is None:
                    raise
                print(f"podpatterns {name}: {reason}", file=sys.stderr)
            return FAILED

        return run

    return wrap


def api_problem(err: Exception) -> str | None:
    """What went wrong talking to the API, in a sentence with a hint; None when `err` is not about the API."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(err, ApiException):
        message = _status_message(err)
        if err.status == 403:
            return f"forbidden: {message} (the user lacks RBAC permission; see README, Day two, for the rules needed)"
        if err.status == 401:
            return f"unauthorized: {message} (the kubeconfig's credentials were refused)"
        if err.status == 404:
            return f"not found: {message}"
        return f"the API answered {err.status} {err.reason}: {message}"
    if isinstance(err, (HTTPError, OSError)):
        return f"cannot reach the Kubernetes API: {err} (is the cluster up, and the kubeconfig's server right?)"
    return None


def _status_message(err: Any) -> str:
    try:
        return json.loads(err.body).get("message") or str(err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


def emit(data: Any, output: str, table: Callable[[Any], str]) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=False))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(table(data), end="")


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns as kubectl prints them: upper-case headers, left-aligned, three spaces apart."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in cells)
