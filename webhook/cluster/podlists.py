"""Pods and Namespaces read from the API as it stores them (raw JSON, not the client's models), Pods page by page."""

from __future__ import annotations

import json
from typing import Any, Iterator

from webhook.cluster import kubeclient
from webhook.core.engine import NamespaceInfo

PAGE = 500  # Pods per list request, as kubectl pages them: a big cluster's Pods are never one response


def read_namespaces(api: Any, namespace: str | None) -> dict[str, NamespaceInfo]:
    """The Namespaces' labels and annotations: all of them in one list, or the one asked for (none if it does not
    exist: it has no Pods either)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    if namespace is None:
        items = json.loads(core.list_namespace(_preload_content=False, _request_timeout=kubeclient.TIMEOUT).data)["items"]
    else:
        try:
            items = [json.loads(core.read_namespace(namespace, _preload_content=False,
                                                    _request_timeout=kubeclient.TIMEOUT).data)]
        except ApiException as err:
            if err.status != 404:
                raise
            items = []
    found = {}
    for item in items:
        meta = item.get("metadata") or {}
        found[meta["name"]] = NamespaceInfo(meta["name"], meta.get("labels") or {}, meta.get("annotations") or {})
    return found


def pages(api: Any, namespace: str | None) -> Iterator[list[dict[str, Any]]]:
    """The Pods as the API stores them (raw JSON, not the client's models), one page at a time."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    token = None
    while True:
        options = {"limit": PAGE, "_continue": token, "_preload_content": False, "_request_timeout": kubeclient.TIMEOUT}
        response = core.list_namespaced_pod(namespace, **options) if namespace else core.list_pod_for_all_namespaces(**options)
        page = json.loads(response.data)
        yield page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return
