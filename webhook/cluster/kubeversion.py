"""Whether the cluster runs native sidecars (Kubernetes >= 1.29): from a setting, or asked once at start."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from webhook.cluster import kubeclient
from webhook.logs import event

NATIVE_SIDECARS_SINCE = (1, 29)


def parse(version: str) -> tuple[int, int]:
    """'1.28', 'v1.30.2', '1.29+' (GKE's minor) -> (major, minor); raises ValueError."""
    match = re.match(r"^v?(\d+)\.(\d+)", version.strip())
    if not match:
        raise ValueError(f"not a Kubernetes version: {version!r} (expected e.g. 1.30)")
    return int(match.group(1)), int(match.group(2))


def native_sidecars(setting: str | None, api_client: Any = None) -> bool:
    """`setting` is a version like '1.28'. Without one, the cluster is asked once (`api_client`, else the
    in-cluster configuration when running in a Pod); outside a cluster a current one is assumed (every
    supported Kubernetes release has native sidecars)."""
    if setting:
        return parse(setting) >= NATIVE_SIDECARS_SINCE
    if api_client is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    try:
        from kubernetes import client

        if api_client is None:
            api_client = kubeclient.api_client()
        info = client.VersionApi(api_client).get_code(_request_timeout=kubeclient.TIMEOUT)
        version = parse(f"{info.major}.{re.sub(r'[^0-9].*', '', info.minor)}")
    except Exception as err:  # any failure: keep serving, with the modern default, and say so
        event(logging.WARNING, "could not read the cluster version; assuming native sidecars", error=str(err))
        return True
    event(logging.INFO, "cluster version read", version=f"{version[0]}.{version[1]}")
    return version >= NATIVE_SIDECARS_SINCE
