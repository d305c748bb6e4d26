"""The cluster's PatternTemplate objects, read once (`catalog list --cluster`): name -> object as the API stores it."""

from __future__ import annotations

import json
from typing import Any

from webhook.catalog import definition
from webhook.cluster import kubeclient

PAGE = 500  # objects per list request: a big catalogue is never one response


def read_all(api: Any) -> dict[str, dict[str, Any]]:
    """Every PatternTemplate (cluster-scoped), page by page, as raw JSON (not the client's models). Raises the
    client's ApiException: 404 when the cluster has no PatternTemplate CRD, 403 without RBAC list on them."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    found: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        response = custom.list_cluster_custom_object(
            definition.GROUP, definition.VERSION, definition.PLURAL, limit=PAGE, _continue=token,
            _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
        page = json.loads(response.data)
        for item in page.get("items") or []:
            found[item["metadata"]["name"]] = item
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return found
