"""The PatternTemplate watch: the cluster's PatternTemplate objects, kept by a list+watch and handed on when they change.

The loop is webhook.cluster.listwatch's (resume, relist on 410 Gone, back off). The objects (name -> the object as
the API returns it) are replaced whole at every change; `on_change` gets them when what the catalogue is built from
changes (an object added or deleted, a new spec), not when only a status or other metadata changes: the server's
own status writes come back as such events and must not rebuild the catalogue again. A cluster without the
CustomResourceDefinition (404) has no PatternTemplates: said once, then asked again with the loop's backoff.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping

from webhook.catalog.definition import GROUP, PLURAL, VERSION
from webhook.cluster import kubeclient
from webhook.cluster.listwatch import WATCH_SECONDS, Backoff, ListWatch, describe
from webhook.logs import event

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

NOT_FOUND = 404
CRD = f"{PLURAL}.{GROUP}"

Objects = Mapping[str, Mapping[str, Any]]


class PatternTemplateWatch(ListWatch):
    """`objects` from a list+watch of patterntemplates.podpatterns.io; `on_change(objects)` runs on the watch's
    thread after the first list (even a 404) and whenever an object's definition changes."""

    what = "patterntemplate"

    def __init__(self, api_client: ApiClient, on_change: Callable[[Objects], None], *,
                 watch_seconds: int = WATCH_SECONDS, backoff: Backoff | None = None):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        super().__init__(functools.partial(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL),
                         watch_seconds=watch_seconds, backoff=backoff)
        self.on_change = on_change
        self.objects: Objects = {}  # replaced whole under _writing; read without a lock
        self._handed: dict[str, Any] | None = None  # the definitions last given to on_change
        self._absent = False  # the last list found no CRD (said once until it is there again)

    def _relist(self) -> int:
        listed = self.lister(_request_timeout=kubeclient.TIMEOUT)
        objects = {item["metadata"]["name"]: item for item in listed.get("items") or ()}
        with self._writing:
            self.objects = objects
            self._resource_version = listed["metadata"]["resourceVersion"]
        if self._absent:
            event(logging.INFO, "patterntemplates are served again: watching them", crd=CRD)
            self._absent = False
        self._changed()
        return len(objects)

    def _apply(self, kind: str, change: dict[str, Any]) -> None:
        obj = change["raw_object"]
        meta = obj["metadata"]
        with self._writing:
            objects = dict(self.objects)
            if kind == "DELETED":
                objects.pop(meta["name"], None)
            else:
                objects[meta["name"]] = obj
            self.objects = objects
            self._resource_version = meta["resourceVersion"]
        self._changed()

    def _failed(self, err: Exception, pause: float) -> None:
        if getattr(err, "status", None) != NOT_FOUND:
            return super()._failed(err, pause)
        # No CRD (never installed, or deleted): no PatternTemplates. The next try lists, as after any absence.
        self._resource_version = None
        with self._writing:
            self.objects = {}
        self._synced.set()  # the cluster answered: what it has is nothing
        if not self._absent:
            event(logging.WARNING, "patterntemplates are not served by the API (is the CustomResourceDefinition "
                  "installed?); serving the built-in and --catalog entries; asking again", crd=CRD,
                  error=describe(err), retry_in=pause)
            self._absent = True
        self._changed()

    def _changed(self) -> None:
        """Calls on_change when a definition changed (or for the first time)."""
        definitions = {name: _definition(obj) for name, obj in self.objects.items()}
        if definitions == self._handed:
            return
        self._handed = definitions
        self.on_change(self.objects)


def _definition(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the catalogue and the status are built from: not the status, not the resourceVersion."""
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion"), obj.get("kind"), meta.get("uid"), meta.get("generation"), obj.get("spec")
