"""`podpatterns serve`: certificates (development, given, or self-managed in a Secret), catalogue, then uvicorn over TLS."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
import yaml

from webhook import certs, logs
from webhook.catalog import catalogue, policy
from webhook.cluster import certsecret, kubeclient, kubeversion
from webhook.cluster.namespacecache import NamespaceCache
from webhook.cluster.webhookconfig import mutating_webhook_configuration
from webhook.core.configuration import Configuration, ConfigurationHolder
from webhook.core.engine import Settings
from webhook.core.keys import AnnotationKeys
from webhook.core.namespaces import Namespaces, namespaces_in
from webhook.server import auditloop, clustercatalogue, protocol, reload
from webhook.server.app import Webhook, create_app
from webhook.server.shutdown import DEFAULT_GRACE_SECONDS, DrainingServer
from webhook.server.tlsreload import CertificateReloader, harden

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# Longer than the apiserver's 90 s idle timeout for webhook connections, so the apiserver always
# closes an idle connection first and never sends a review on one the server is closing.
KEEP_ALIVE_SECONDS = 120.0


class Refusal(Exception):
    """A reason not to start, said on stderr, with the exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


@dataclass
class Certificates:
    certfile: Path
    keyfile: Path
    ca_file: Path | None  # a CA to print a caBundle for (development certificates only)
    secret: certsecret.CertificateSecret | None = None


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    try:
        api = _cluster(args)
        try:
            seen = reload.fingerprint(args.catalog, args.policy)  # before loading: a change meanwhile is reloaded
            settings = Settings(AnnotationKeys(args.prefix), kubeversion.native_sidecars(args.kube_version, api),
                                args.image_registry, tuple(args.image_pull_secret))

            def load(objects: reload.Objects | None) -> Configuration:
                return reload.load(args.catalog, args.policy, settings, objects)

            configuration = clustercatalogue.first_configuration(load, api) if args.watch_patterntemplates else load(None)
        except catalogue.CatalogueError as err:
            raise Refusal(f"refusing to start, the catalogue is broken:\n{err}") from err
        except policy.PolicyError as err:
            raise Refusal(f"refusing to start, the policy is broken:\n{err}") from err
        except ValueError as err:
            raise Refusal(str(err)) from err
        namespaces = _namespaces(args, api)
        certificates = _certificates(args, api)
    except Refusal as err:
        print(f"podpatterns serve: {err}", file=sys.stderr)
        return err.status

    if certificates.ca_file is not None and not args.quiet:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        bundle = certs.ca_bundle(certificates.ca_file)
        print(f"# caBundle: {bundle}")
        print("# Apply this to point a cluster at this server (kubectl apply -f -):")
        print(yaml.safe_dump(mutating_webhook_configuration(f"https://{host}:{args.port}/mutate", bundle, prefix=args.prefix), sort_keys=False))
        sys.stdout.flush()

    holder = ConfigurationHolder(configuration)
    certfile, keyfile = certificates.certfile, certificates.keyfile
    cache = namespaces if isinstance(namespaces, NamespaceCache) else None
    watcher = None
    if args.watch_patterntemplates or ((args.catalog or args.policy) and args.reload_seconds > 0):
        watcher = reload.ConfigurationReloader(holder, args.catalog, args.policy, configuration.settings,
                                               args.reload_seconds, seen)
    # The cluster's PatternTemplates: a third source of the reloader's, which rebuilds on its thread.
    templates = clustercatalogue.ClusterCatalogue(api, watcher) if args.watch_patterntemplates else None

    def ready() -> bool:
        # Not before the Namespaces are listed and a catalogue is built with the cluster's PatternTemplates.
        return (cache is None or cache.synced) and (templates is None or templates.ready())

    app = create_app(holder, max_body_bytes=args.max_body_bytes, namespaces=namespaces,
                     ready=ready if cache is not None or templates is not None else None,
                     unreadable=args.unsynced_namespaces, catalogue_dirs=args.catalog)
    if cache is not None:
        # /readyz answers 503 until its first list has arrived; a review meanwhile looks its Namespace up.
        cache.start()
    limits = Limits.of(args)
    config = uvicorn_config(app, args.host, args.port, certfile, keyfile, limits)
    reloader = CertificateReloader(config.ssl, certfile, keyfile)
    reloader.start()
    if watcher is not None:
        watcher.start()
    if templates is not None:
        templates.start()
    audit = auditloop.from_args(args, api, holder)  # None unless --audit-interval
    if audit is not None:
        audit.start()
    if certificates.secret is not None:
        certificates.secret.run(args.cert_check_seconds)
    server = DrainingServer(config, app.drain, args.drain_seconds)
    health = _health_server(app, args.host, args.health_port, limits) if args.health_port else None
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(_serve(server, health, reloader))
    for service in (cache, reloader, templates, watcher, audit, certificates.secret):
        if service is not None:
            service.stop()
    return 0


async def _serve(server: DrainingServer, health: uvicorn.Server | None, reloader: CertificateReloader) -> None:
    """The webhook, and beside it the optional plain-HTTP health and metrics server, which stops with it."""
    reloader.loop = asyncio.get_running_loop()  # certificates are loaded between two accepts, never during one
    if health is None:
        return await server.serve()
    beside = asyncio.create_task(health.serve())
    try:
        await server.serve()
    finally:
        health.should_exit = True
        await beside


class _Beside(uvicorn.Server):
    """A server that leaves the signals to the webhook's DrainingServer."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def _health_server(app: Webhook, host: str, port: int, limits: Limits) -> uvicorn.Server:
    """/healthz, /readyz and /metrics in plain HTTP on their own port, for probes and scrapers without TLS;
    /mutate is never served there."""
    config = uvicorn.Config(app.api, host=host, port=port, loop="uvloop", lifespan="off",
                            http=protocol.guarded_protocol(limits.read_timeout, limits.max_head_bytes),
                            timeout_keep_alive=limits.idle_timeout, access_log=False, log_config=None,
                            server_header=False)
    return _Beside(config)


def _cluster(args: argparse.Namespace) -> ApiClient | None:
    """The API client for self-managed mode and the Namespace watch (None without either), after checking the
    options that go with them."""
    if args.watch_namespaces and args.namespaces_file:
        raise Refusal("--watch-namespaces and --namespaces-file exclude each other: the Namespaces come from the "
                      "cluster or from the file")
    if args.audit_write_reports and not args.audit_interval:
        raise Refusal("--audit-write-reports writes what the background audit finds: it needs --audit-interval SECONDS")
    if not args.cert_secret:
        needed = "--watch-namespaces" if args.watch_namespaces else "--audit-interval" if args.audit_interval else \
            "--watch-patterntemplates" if args.watch_patterntemplates else None
        return _api_client(needed) if needed else None
    if args.tls_cert or args.tls_key:
        raise Refusal("--cert-secret makes and renews the certificate itself; it excludes --tls-cert and --tls-key")
    if not args.service:
        raise Refusal("--cert-secret needs --service NAME, the Service the certificate is for")
    if not 0 < args.cert_renew_before_days < args.cert_validity_days:
        raise Refusal("--cert-renew-before-days must be more than 0 and less than --cert-validity-days")
    if args.cert_check_seconds <= 0 or args.cert_start_seconds <= 0:
        raise Refusal("--cert-check-seconds and --cert-start-seconds must be more than 0")
    args.namespace = args.namespace or kubeclient.current_namespace()  # resolved once, for _certificates
    if not args.namespace:
        raise Refusal("--cert-secret needs --namespace NS (or $POD_NAMESPACE, or to run in a Pod)")
    return _api_client("--cert-secret")


def _api_client(needed_by: str) -> ApiClient:
    try:
        return kubeclient.api_client()
    except Exception as err:  # no in-cluster account and no usable kubeconfig
        raise Refusal(f"{needed_by} needs the Kubernetes API, and there is no configuration for it: {err}") from err


def _namespaces(args: argparse.Namespace, api: ApiClient | None) -> Namespaces | None:
    """Where the Namespaces' labels and annotations come from: the cluster (a watched cache), a file of
    Namespace manifests, or none."""
    if args.watch_namespaces:
        return NamespaceCache(api, lookup_timeout=args.namespace_lookup_timeout_seconds)
    if not args.namespaces_file:
        return None
    try:
        with open(args.namespaces_file, encoding="utf-8") as stream:
            return namespaces_in([doc for doc in yaml.safe_load_all(stream) if doc is not None])
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise Refusal(f"--namespaces-file {args.namespaces_file}: {err}") from err


def _certificates(args: argparse.Namespace, api: ApiClient | None) -> Certificates:
    paths = certs.CertPaths(Path(args.certs_dir))
    if args.cert_secret:
        target = certsecret.Target(args.namespace, args.cert_secret, args.service, args.webhook_configuration,
                                   tuple(args.dns_name), args.validating_webhook_configuration)
        lifetimes = certsecret.Lifetimes(serving=dt.timedelta(days=args.cert_validity_days),
                                         renew_before=dt.timedelta(days=args.cert_renew_before_days))
        secret = certsecret.CertificateSecret(api, target, paths, lifetimes)
        try:
            secret.start(args.cert_start_seconds)
        except certsecret.StartError as err:
            raise Refusal(str(err), status=1) from err
        return Certificates(paths.cert, paths.key, None, secret)
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise Refusal("--tls-cert and --tls-key go together")
        return Certificates(Path(args.tls_cert), Path(args.tls_key), None)
    done = certs.ensure(paths, ["localhost", *args.dns_name], ["127.0.0.1"])
    print(f"# certificates in {paths.directory}/: {done}", file=sys.stderr)
    return Certificates(paths.cert, paths.key, paths.ca_cert)


@dataclass(frozen=True)
class Limits:
    """How long connections may idle or take, how big a request head may be, how long shutdown may wait."""

    idle_timeout: float = KEEP_ALIVE_SECONDS
    read_timeout: float = protocol.DEFAULT_READ_TIMEOUT
    max_head_bytes: int = protocol.DEFAULT_MAX_HEAD_BYTES
    shutdown_timeout: float = DEFAULT_GRACE_SECONDS

    @classmethod
    def of(cls, args: argparse.Namespace) -> Limits:
        return cls(args.idle_timeout_seconds, args.read_timeout_seconds, args.max_head_bytes,
                   args.shutdown_timeout_seconds)


def uvicorn_config(app, host: str, port: int, certfile: Path, keyfile: Path, limits: Limits = Limits()) -> uvicorn.Config:
    """The production server settings (bench/ starts its baseline with the very same ones)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        loop="uvloop",
        http=protocol.guarded_protocol(limits.read_timeout, limits.max_head_bytes),
        timeout_keep_alive=limits.idle_timeout,
        timeout_graceful_shutdown=limits.shutdown_timeout,
        access_log=False,
        log_config=None,
        server_header=False,
    )
    config.load()
    harden(config.ssl)
    return config
