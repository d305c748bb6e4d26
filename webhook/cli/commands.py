"""The `podpatterns` command line: serve, inject, explain, catalog, policy, certs, and the day-two commands."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TextIO

import yaml

from webhook import certs
from webhook.catalog import catalogue, policy
from webhook.cli import rollout, settingsfile, status
from webhook.cli import check as check_command  # `check` names a parser in _parser
from webhook.cli import selftest
from webhook.cli import catalogcrd, cataloglist
from webhook.cli import audit
from webhook.cluster import kubeversion
from webhook.core import rules
from webhook.core.configuration import Configuration
from webhook.core.engine import Settings
from webhook.core.keys import DEFAULT_PREFIX, AnnotationKeys


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        try:
            settings = settingsfile.flags(args.config, parser.serve_parser)
        except settingsfile.SettingsError as err:
            print(f"podpatterns serve: {err}", file=sys.stderr)
            return 2
        # The file's settings go first: a flag on the command line wins.
        args = parser.parse_args(["serve", *settings, *argv[1:]])
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podpatterns", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTPS admission webhook")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8443, help="HTTPS port (default 8443)")
    serve.add_argument("--certs-dir", default="certs", help="where development certificates are made and reused")
    serve.add_argument("--dns-name", action="append", default=[], help="extra DNS name for the serving certificate")
    serve.add_argument("--tls-cert", help="use this serving certificate instead of --certs-dir (watched for changes)")
    serve.add_argument("--tls-key", help="the key of --tls-cert")
    serve.add_argument("--max-body-bytes", type=int, default=3 * 1024 * 1024, help="largest accepted request body")
    serve.add_argument("--reload-seconds", type=float, default=1.0,
                       help="how often --catalog and --policy files are checked for changes (default 1; 0 disables)")
    serve.add_argument("--watch-patterntemplates", action="store_true",
                       help="also serve the cluster's PatternTemplate objects (a list+watch; they override built-in "
                            "and --catalog entries of their name), reloaded as the files are, and write their status")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--quiet", action="store_true", help="do not print the caBundle and webhook configuration")
    serve.add_argument("--config", metavar="FILE",
                       help="YAML settings file: serve flags without the dashes (e.g. log-level: debug); flags win")
    limits = serve.add_argument_group("connections and shutdown (see README, Reliability)")
    limits.add_argument("--idle-timeout-seconds", type=_positive, default=120.0,
                        help="close a connection idle this long (default 120: above the apiserver's 90 s, so the "
                             "apiserver closes first and never sends on a connection being closed)")
    limits.add_argument("--read-timeout-seconds", type=_positive, default=10.0,
                        help="a request must arrive whole within this long of its first byte, else 408 (default 10)")
    limits.add_argument("--max-head-bytes", type=_head_bytes, default=32 * 1024,
                        help="largest request line plus headers, else 431 (default 32768)")
    limits.add_argument("--drain-seconds", type=_not_negative, default=5.0,
                        help="on SIGTERM, answer for this long with /readyz at 503 before closing (default 5)")
    limits.add_argument("--shutdown-timeout-seconds", type=_positive, default=10.0,
                        help="then wait at most this long for in-flight requests (default 10)")
    limits.add_argument("--health-port", type=_port, metavar="PORT",
                        help="also serve /healthz, /readyz and /metrics in plain HTTP on this port (never /mutate)")
    managed = serve.add_argument_group("self-managed certificates (in a cluster; the files go to --certs-dir)")
    managed.add_argument("--cert-secret", metavar="NAME",
                         help="keep the CA and serving certificate in this Secret of --namespace, shared by all replicas")
    managed.add_argument("--service", metavar="NAME", help="the Service the certificate is for (NAME, NAME.NS, NAME.NS.svc, …)")
    managed.add_argument("--namespace", metavar="NS",
                         help="namespace of the Secret and Service (default $POD_NAMESPACE, else the service account's)")
    managed.add_argument("--webhook-configuration", metavar="NAME",
                         help="MutatingWebhookConfiguration whose webhooks' caBundle is kept equal to the CA")
    managed.add_argument("--validating-webhook-configuration", metavar="NAME",
                         help="ValidatingWebhookConfiguration (PatternTemplates, POST /validate) kept the same way")
    managed.add_argument("--cert-check-seconds", type=float, default=300,
                         help="how often the Secret is re-read and the caBundle re-asserted (default 300)")
    managed.add_argument("--cert-validity-days", type=int, default=365, help="serving certificate lifetime (default 365)")
    managed.add_argument("--cert-renew-before-days", type=int, default=30, help="renew this long before expiry (default 30)")
    managed.add_argument("--cert-start-seconds", type=float, default=60,
                         help="how long to keep trying to get a certificate at start before exiting (default 60)")
    _engine_options(serve)
    _namespace_options(serve)
    audit.add_serve_options(serve)
    serve.set_defaults(func=_serve)
    parser.serve_parser = serve  # the settings file is checked against serve's own flags

    for name, helptext, func in (("inject", "inject into the Pods of a manifest and print it", _inject),
                                 ("explain", "say what would be injected into each Pod and why", _explain)):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("-f", "--filename", required=True, help="manifest file, - for standard input")
        command.add_argument("-n", "--namespace", default="default", help="namespace of objects that name none")
        _engine_options(command)
        command.set_defaults(func=func)

    catalog = commands.add_parser("catalog", help="list or validate catalogue entries; print the CRD").add_subparsers(required=True, metavar="ACTION")
    cataloglist.add_parser(catalog)
    validate = catalog.add_parser("validate", help="validate a directory of PatternTemplate files")
    validate.add_argument("directory")
    validate.set_defaults(func=_catalog_validate)
    catalogcrd.add_parser(catalog)

    policy_command = commands.add_parser("policy", help="validate a policy file").add_subparsers(required=True, metavar="ACTION")
    check = policy_command.add_parser("validate", help="validate a Policy file against the catalogue")
    check.add_argument("file")
    check.add_argument("--catalog", action="append", default=[], metavar="DIR", help="catalogue entries it may name")
    check.set_defaults(func=_policy_validate)

    cert = commands.add_parser("certs", help="make certificates; print a caBundle").add_subparsers(required=True, metavar="ACTION")
    generate = cert.add_parser("generate", help="a CA and a serving certificate for an in-cluster Service")
    generate.add_argument("--service", required=True)
    generate.add_argument("--namespace", required=True)
    generate.add_argument("--out", required=True, help="directory for ca.crt, ca.key, tls.crt, tls.key")
    generate.add_argument("--dns-name", action="append", default=[], help="extra DNS name")
    generate.set_defaults(func=_certs_generate)
    bundle = cert.add_parser("cabundle", help="print the base64 caBundle of a CA certificate")
    bundle.add_argument("--ca", default="certs/ca.crt")
    bundle.set_defaults(func=_certs_cabundle)
    status.add_parser(commands)
    rollout.add_parser(commands)
    check_command.add_parser(commands)
    selftest.add_parser(commands)
    audit.add_parser(commands)
    return parser


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", action="append", default=[], metavar="DIR",
                        help="directory of PatternTemplate YAML files that add or override entries")
    parser.add_argument("--kube-version", help="Kubernetes version of the cluster, e.g. 1.28 (decides lifecycle: auto)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"annotation prefix (default {DEFAULT_PREFIX})")
    parser.add_argument("--policy", metavar="FILE", help="cluster-wide policy file (a Policy document)")
    parser.add_argument("--image-registry", metavar="HOST[/PATH]", type=_registry,
                        help="pull every injected image from this registry instead (air-gapped clusters); repository, "
                             "tag and digest are kept")
    parser.add_argument("--image-pull-secret", action="append", default=[], metavar="NAME", type=_secret_name,
                        help="add this Secret to spec.imagePullSecrets of every Pod that gets an entry (repeatable)")


def _namespace_options(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("Namespaces (their annotations and labels drive defaults and policy rules)")
    group.add_argument("--watch-namespaces", action="store_true",
                       help="keep a cache of the cluster's Namespaces with a list+watch (in a cluster)")
    group.add_argument("--namespace-lookup-timeout-seconds", type=_lookup_timeout, default=2.0,
                       help="a review whose Namespace the cache has not seen (new, or before the first list) reads it "
                            "from the API and waits at most this long (default 2; keep it well under the webhook's "
                            "timeoutSeconds)")
    group.add_argument("--unsynced-namespaces", choices=["fail", "skip"], default="fail",
                       help="when a review's Namespace cannot be read (the lookup fails or times out, e.g. before the "
                            "first list): fail (deny it with the reason) or skip (answer 503 with the reason, so the "
                            "webhook's failurePolicy decides); never injected without the Namespace; default fail")
    group.add_argument("--namespaces-file", metavar="FILE",
                       help="Namespace manifests to use instead of a cluster (development and tests)")


def _configuration(args: argparse.Namespace) -> Configuration:
    entries = catalogue.load(args.catalog)
    return Configuration(
        entries,
        # Offline there is no cluster to ask: without --kube-version, assume a current one.
        Settings(AnnotationKeys(args.prefix), kubeversion.parse(args.kube_version) >= kubeversion.NATIVE_SIDECARS_SINCE
                 if args.kube_version else True, args.image_registry, tuple(args.image_pull_secret)),
        policy.load(args.policy, entries) if args.policy else rules.EMPTY,
    )


def _serve(args: argparse.Namespace) -> int:
    from webhook.server import serve  # uvicorn is only imported when serving

    return serve.run(args)


def _open(filename: str) -> TextIO:
    return sys.stdin if filename == "-" else open(filename, encoding="utf-8")


def _run_offline(args: argparse.Namespace):
    from webhook.cli import offline

    try:
        configuration = _configuration(args)
        with _open(args.filename) as stream:
            docs = offline.read_manifests(stream)
    except catalogue.CatalogueError as err:
        print(f"podpatterns: the catalogue is broken:\n{err}", file=sys.stderr)
        return None, None
    except policy.PolicyError as err:
        print(f"podpatterns: the policy is broken:\n{err}", file=sys.stderr)
        return None, None
    except (OSError, ValueError) as err:
        print(f"podpatterns: {err}", file=sys.stderr)
        return None, None
    return offline.run(docs, configuration, args.namespace), configuration


def _inject(args: argparse.Namespace) -> int:
    results, _ = _run_offline(args)
    if results is None:
        return 2
    denied = [r for r in results if r.plan is not None and r.plan.denial is not None]
    for r in results:
        for warning in (r.plan.warnings if r.plan else ()):
            print(f"warning: {r.target.label}: {warning}", file=sys.stderr)
    if denied:
        for r in denied:
            print(f"podpatterns: {r.target.label}: denied: {r.plan.denial}", file=sys.stderr)
        return 1
    yaml.dump_all([r.doc for r in results], sys.stdout, Dumper=_PlainDumper, sort_keys=False)
    return 0


class _PlainDumper(yaml.SafeDumper):
    """Writes a value shared by two containers (the same env list, rendered once) twice, not as &id001/*id001,
    and a text of several lines (an entry's config file in an annotation) as a literal block, as it reads."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    literal = "\n" in value and not any(line != line.rstrip() for line in value.splitlines())
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if literal else None)


_PlainDumper.add_representer(str, _text)


def _explain(args: argparse.Namespace) -> int:
    from webhook.cli import offline

    results, configuration = _run_offline(args)
    if results is None:
        return 2
    texts = [offline.explain(r, configuration.settings.keys.inject) for r in results]
    print("\n".join(t for t in texts if t) or "no Pods or pod templates in the input")
    return 0


def _catalog_validate(args: argparse.Namespace) -> int:
    try:
        entries = catalogue.load_directory(args.directory)
    except catalogue.CatalogueError as err:
        print(err, file=sys.stderr)
        print(f"{len(err.problems)} problem(s) in {args.directory}", file=sys.stderr)
        return 1
    builtin = catalogue.builtin_entries()
    for name, entry in sorted(entries.items()):
        note = " (overrides the built-in)" if name in builtin else ""
        print(f"ok: {name} ({entry.pattern}) at {entry.origin}{note}")
        for warning in entry.warnings:
            print(f"warning: {name}: not Pod Security 'restricted': {warning}")
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} valid in {args.directory}")
    return 0


def _policy_validate(args: argparse.Namespace) -> int:
    try:
        checked = policy.load(args.file, catalogue.load(args.catalog))
    except catalogue.CatalogueError as err:
        print(f"podpatterns: the catalogue is broken:\n{err}", file=sys.stderr)
        return 2
    except policy.PolicyError as err:
        print(err, file=sys.stderr)
        return 1
    for rule in checked.rules:
        does = [f"inject {', '.join(rule.inject)}" + (" (mandatory)" if rule.mandatory else "")] if rule.inject else []
        does += [f"missing limits: {rule.resources.missing_limits}"] if rule.resources else []
        does += [f"at most {rule.max_containers} containers"] if rule.max_containers else []
        does += [f"allowed entries: {', '.join(sorted(rule.allowed_entries)) or 'none'}"] if rule.allowed_entries is not None else []
        does += [f"bounds {entry}.{name}" + "".join(f" {sign} {value}" for sign, value in ((">=", low), ("<=", high))
                                                    if value is not None)
                 for entry, name, low, high in rule.parameter_bounds]
        enforcement = f" (enforcement {rule.enforcement})" if rule.enforcement != "enforce" else ""
        print(f"ok: rule {rule.name}{enforcement}: {'; '.join(does)}")
    for environment, entries in sorted(checked.environments.items()):
        values = ", ".join(f"{entry}.{name}={value}" for entry, params in entries.items() for name, value in params.items())
        print(f"ok: environment {environment} (namespace label {checked.environment_label}): {values}")
    print(f"{len(checked.rules)} rule(s) valid in {args.file}")
    return 0


def _certs_generate(args: argparse.Namespace) -> int:
    paths = certs.CertPaths(Path(args.out))
    certs.generate(paths, certs.service_dns_names(args.service, args.namespace) + args.dns_name, [])
    print(f"wrote {paths.ca_cert}, {paths.ca_key}, {paths.cert}, {paths.key}", file=sys.stderr)
    print(certs.ca_bundle(paths.ca_cert))
    return 0


def _certs_cabundle(args: argparse.Namespace) -> int:
    try:
        print(certs.ca_bundle(Path(args.ca)))
    except OSError as err:
        print(f"podpatterns: cannot read {args.ca}: {err}", file=sys.stderr)
        return 2
    return 0


def _registry(text: str) -> str:
    # A host (with an optional port) and an optional path, as it leads an image reference.
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*", text):
        raise argparse.ArgumentTypeError(f"must be a registry host with an optional port and path, e.g. "
                                         f"registry.internal or registry.internal:5000/mirror; got {text!r}")
    return text


def _secret_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", text) or len(text) > 253:
        raise argparse.ArgumentTypeError(f"must be a Secret name (a DNS subdomain), got {text!r}")
    return text


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _lookup_timeout(text: str) -> float:
    # The apiserver waits at most 30 s for a webhook (timeoutSeconds); a lookup must end well within that.
    value = float(text)
    if not 0 < value < 30:
        raise argparse.ArgumentTypeError(f"must be more than 0 and less than 30 (the longest webhook timeout), got {text}")
    return value


def _not_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {text}")
    return value


def _head_bytes(text: str) -> int:
    value = int(text)
    if value < 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1024, got {text}")
    return value
