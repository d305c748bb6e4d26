"""`podpatterns catalog list`: the entries served, where each comes from, and what each override hides."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.catalog import catalogue
from webhook.cli import clusterargs
from webhook.core.entries import Entry

DESCRIPTION = """Lists the catalogue entries as the server merges them: the built-ins, overridden by the --catalog
directories (in order), overridden by the cluster's PatternTemplate objects (with --cluster). Each entry names where
it comes from (built-in FILE:LINE, directory PATH:LINE, cluster object patterntemplate/NAME) and the entries of the
same name it overrides. Exit code: 0 listed, 2 a broken catalogue or no cluster."""


def add_parser(catalog: Any) -> None:
    parser = catalog.add_parser("list", help="list the entries and where each comes from (built-in, --catalog, cluster)",
                                description=DESCRIPTION)
    parser.add_argument("--catalog", action="append", default=[], metavar="DIR",
                        help="directory of PatternTemplate files, as serve --catalog (repeatable; later ones win)")
    parser.add_argument("--cluster", action="store_true",
                        help="also the cluster's PatternTemplate objects, which override both (implied by "
                             "--kubeconfig or --context)")
    clusterargs.add_connection(parser)
    parser.set_defaults(func=run)


@clusterargs.cluster_command("catalog list")
def run(args: argparse.Namespace) -> int:
    objects = _cluster_objects(args) if args.cluster or args.kubeconfig or args.context else None
    try:
        sources = catalogue.sources(args.catalog, objects)
    except catalogue.CatalogueError as err:
        print(f"podpatterns: the catalogue is broken:\n{err}", file=sys.stderr)
        return clusterargs.FAILED
    served: dict[str, tuple[str, Entry]] = {}
    hidden: dict[str, list[tuple[str, Entry]]] = {}
    for kind, entries in sources:
        for name, entry in entries.items():
            if name in served:
                hidden.setdefault(name, []).append(served[name])
            served[name] = (kind, entry)
    for name in sorted(served):
        kind, entry = served[name]
        print(f"{name}  ({entry.pattern}, lifecycle {entry.lifecycle}, {entry.digest})  from {_origin(kind, entry)}")
        if name in hidden:
            print("    overrides " + ", ".join(f"the {k}{' entry' if k != 'built-in' else ''} ({_where(k, e)})"
                                             for k, e in hidden[name]))
        print(f"    {entry.description}")
        for p in entry.parameters.values():
            need = "required" if p.required else f"default {p.default!r}" if p.default is not None else "optional"
            print(f"    {p.name}: {p.type}, {need}: {p.description}")
    return clusterargs.OK


def _origin(kind: str, entry: Entry) -> str:
    return entry.origin if kind == "built-in" else f"{kind} {_where(kind, entry)}"


def _where(kind: str, entry: Entry) -> str:
    """The file and line; a cluster object is one document, so its name says it all."""
    if kind == "built-in":
        return entry.origin.removeprefix("built-in ")
    if kind == "cluster object":
        return entry.origin.rsplit(":", 1)[0]
    return entry.origin


def _cluster_objects(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from kubernetes.client.exceptions import ApiException

    from webhook.cluster import patterntemplatelist

    api = clusterargs.connect(args)
    try:
        return patterntemplatelist.read_all(api)
    except ApiException as err:
        if err.status == 404:
            raise clusterargs.CommandFailed(
                "the cluster has no PatternTemplate CRD (patterntemplates.podpatterns.io): install it with "
                "kubectl apply -f charts/podpatterns/crds/") from None
        raise
