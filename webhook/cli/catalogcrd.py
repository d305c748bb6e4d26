"""`podpatterns catalog crd`: the PatternTemplate CustomResourceDefinition, as the chart ships it in crds/."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from webhook.catalog import definition

CHART_FILE = "charts/podpatterns/crds/patterntemplates.podpatterns.io.yaml"


def add_parser(catalog: Any) -> None:
    parser = catalog.add_parser("crd", help="print the PatternTemplate CRD (the chart's crds/ file)",
                                description=f"Prints the PatternTemplate CustomResourceDefinition as YAML, made from the "
                                            f"definition the loader checks. {CHART_FILE} is exactly this output: "
                                            f"regenerate it with podpatterns catalog crd > {CHART_FILE}")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"# Made by `podpatterns catalog crd` from webhook/catalog/definition.py; do not edit: regenerate with\n"
          f"# podpatterns catalog crd > {CHART_FILE}")
    yaml.safe_dump(definition.crd(), sys.stdout, sort_keys=False, width=120)
    return 0
