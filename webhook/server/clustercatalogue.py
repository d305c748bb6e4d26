"""The catalogue's cluster source in `serve --watch-patterntemplates`: read once at start, then the PatternTemplate
watch feeds the reloader, whose rebuilds feed the status writer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from webhook.catalog import catalogue, policy
from webhook.cluster.listwatch import describe
from webhook.cluster.patterntemplatelist import read_all
from webhook.cluster.patterntemplates import PatternTemplateWatch
from webhook.cluster.patterntemplatestatus import StatusWriter
from webhook.core.configuration import Configuration
from webhook.logs import event
from webhook.server.reload import ConfigurationReloader, Objects

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


def first_configuration(load: Callable[[Objects | None], Configuration], api_client: ApiClient) -> Configuration:
    """The configuration to start with: with the cluster's PatternTemplates when they can be read (a policy may name an
    entry only the cluster has), else from the files alone, which the watch's first rebuild completes. Objects that
    do not load are left out the same way (their status says why); raises what the files alone raise."""
    try:
        objects = read_all(api_client)
    except Exception as err:  # noqa: BLE001 - no CRD (404), no API yet: the watch keeps asking
        event(logging.WARNING, "patterntemplates not read at start; serving the built-in and --catalog entries until "
              "the watch reads them", error=describe(err))
        return load(None)
    try:
        return load(objects)
    except (catalogue.CatalogueError, policy.PolicyError) as err:
        try:
            configuration = load(None)
        except (catalogue.CatalogueError, policy.PolicyError):
            raise err from None  # with the objects' problems too
        event(logging.ERROR, "the cluster's patterntemplates do not load; starting with the built-in and --catalog "
              "entries", problems=[str(p) for p in err.problems][:20], problem_count=len(err.problems))
        return configuration


class ClusterCatalogue:
    """`start()`, ask `ready()` (a rebuild has read the cluster's PatternTemplates, or their absence), `stop()`."""

    def __init__(self, api_client: ApiClient, reloader: ConfigurationReloader):
        self.reloader = reloader
        self.watch = PatternTemplateWatch(api_client, reloader.objects_changed)
        self.writer = StatusWriter(api_client, lambda: self.watch.objects)
        reloader.on_rebuilt = self._rebuilt

    def _rebuilt(self, objects: Objects, served: Configuration, failure: Exception | None) -> None:
        self.writer.offer(objects, served.catalogue, failure, served.settings.native_sidecars)

    def ready(self) -> bool:
        return self.reloader.objects_built.is_set()

    def start(self) -> None:
        self.writer.start()
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()
        self.writer.stop()
