"""`podpatterns serve`: certificates, catalogue, printed webhook configuration, then uvicorn over TLS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
import yaml

from webhook import catalogue, certs, kubeversion, logs
from webhook.app import create_app
from webhook.configuration import Configuration, ConfigurationHolder
from webhook.engine import Settings
from webhook.keys import AnnotationKeys
from webhook.tlsreload import CertificateReloader, harden
from webhook.webhookconfig import mutating_webhook_configuration

# Longer than the apiserver's 90 s idle timeout for webhook connections, so the apiserver always
# closes an idle connection first and never sends a review on one the server is closing.
KEEP_ALIVE_SECONDS = 120


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    try:
        configuration = Configuration(
            catalogue.load(args.catalog),
            Settings(AnnotationKeys(args.prefix), kubeversion.native_sidecars(args.kube_version)),
        )
    except catalogue.CatalogueError as err:
        print(f"podpatterns serve: refusing to start, the catalogue is broken:\n{err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"podpatterns serve: {err}", file=sys.stderr)
        return 2

    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("podpatterns serve: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        certfile, keyfile, ca_file = Path(args.tls_cert), Path(args.tls_key), None
    else:
        paths = certs.CertPaths(Path(args.certs_dir))
        done = certs.ensure(paths, ["localhost", *args.dns_name], ["127.0.0.1"])
        print(f"# certificates in {paths.directory}/: {done}", file=sys.stderr)
        certfile, keyfile, ca_file = paths.cert, paths.key, paths.ca_cert

    if ca_file is not None and not args.quiet:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        bundle = certs.ca_bundle(ca_file)
        print(f"# caBundle: {bundle}")
        print("# Apply this to point a cluster at this server (kubectl apply -f -):")
        print(yaml.safe_dump(mutating_webhook_configuration(f"https://{host}:{args.port}/mutate", bundle), sort_keys=False))
        sys.stdout.flush()

    holder = ConfigurationHolder(configuration)
    config = uvicorn_config(create_app(holder, max_body_bytes=args.max_body_bytes), args.host, args.port, certfile, keyfile)
    reloader = CertificateReloader(config.ssl, certfile, keyfile)
    reloader.start()
    uvicorn.Server(config).run()
    reloader.stop()
    return 0


def uvicorn_config(app, host: str, port: int, certfile: Path, keyfile: Path) -> uvicorn.Config:
    """The production server settings (bench/ starts its baseline with the very same ones)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile),
        ssl_keyfile=str(keyfile),
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        access_log=False,
        log_config=None,
        server_header=False,
    )
    config.load()
    harden(config.ssl)
    return config
