"""A webhook replica's /metrics, read through the apiserver's pod proxy (no route to the Pod needed)."""

from __future__ import annotations

from typing import Any

from webhook.cluster import kubeclient


def proxy_name(pod: dict[str, Any]) -> str | None:
    """How the pod proxy names the port serving /metrics: `NAME:PORT` for the plain health port (`serve
    --health-port`, the container port named `health`), else `https:NAME:PORT` for the webhook port (named `https`);
    None when the Pod declares neither."""
    name = pod["metadata"]["name"]
    ports = {p.get("name"): p.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or []
             for p in c.get("ports") or []}
    if ports.get("health"):
        return f"{name}:{ports['health']}"
    if ports.get("https"):
        return f"https:{name}:{ports['https']}"
    return None


def scrape(api: Any, namespace: str, name: str) -> str:
    """The text of GET /metrics of `name` (from proxy_name). Raises the client's ApiException (503: the apiserver could
    not reach the Pod)."""
    from kubernetes import client

    response = client.CoreV1Api(api).connect_get_namespaced_pod_proxy_with_path(
        name, namespace, "metrics", _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
    return response.data.decode("utf-8", "replace")


def sample(text: str, metric: str) -> float | None:
    """The value of the unlabelled sample `metric` in a Prometheus text exposition, None when absent."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == metric and not found.labels:
                return found.value
    return None
