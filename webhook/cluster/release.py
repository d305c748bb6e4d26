"""An installed Helm release's configuration: the catalogue, policy and settings ConfigMaps the chart writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from webhook.cluster import kubeclient

INSTANCE_LABEL = "app.kubernetes.io/instance"


class ReleaseNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ReleaseFiles:
    """What `serve` mounts in the release's Pods, read from the API instead of the files."""

    release: str
    namespace: str
    catalogue: dict[str, str] = field(default_factory=dict)  # "configmap/NAME:file.yaml" -> text
    policy: str | None = None
    policy_origin: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def read(api: Any, release: str, namespace: str) -> ReleaseFiles:
    """The release's ConfigMaps (chart templates/configmaps.yaml: <fullname>-catalogue, -policy, -settings), found by
    the chart's instance label. Raises ReleaseNotFound, or the client's ApiException."""
    from kubernetes import client

    found = client.CoreV1Api(api).list_namespaced_config_map(
        namespace, label_selector=f"{INSTANCE_LABEL}={release}", _request_timeout=kubeclient.TIMEOUT)
    maps = {item.metadata.name: item.data or {} for item in found.items}
    by_role = {role: name for name in maps for role in ("catalogue", "policy", "settings") if name.endswith(f"-{role}")}
    if not by_role:
        raise ReleaseNotFound(f"no ConfigMaps of release {release} in namespace {namespace} (label "
                              f"{INSTANCE_LABEL}={release}); is it installed there? (helm list -n {namespace})")
    catalogue = {f"configmap/{by_role['catalogue']}:{key}": text
                 for key, text in sorted(maps.get(by_role.get("catalogue", ""), {}).items())
                 if key.endswith((".yaml", ".yml"))}
    policy_map = by_role.get("policy")
    policy = maps[policy_map].get("policy.yaml") if policy_map else None
    settings_text = maps[by_role["settings"]].get("settings.yaml") if "settings" in by_role else None
    settings = yaml.safe_load(settings_text or "") or {}
    if not isinstance(settings, dict):
        settings = {}
    return ReleaseFiles(release, namespace, catalogue, policy, f"configmap/{policy_map}:policy.yaml", settings)
