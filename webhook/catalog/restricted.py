"""The Pod Security Standard "restricted" rules that apply to one injected container or volume.

Checked at catalogue load (a violating entry loads with a warning) and in the tests for the built-ins.
Pod-level fields cannot be counted on (the app owns them), so every rule must hold on the container.
A rule must also hold for every value a Pod's annotations can give a parameter, so a placeholder in a
field the rules look at is itself a violation (`template_violations`).
"""

from __future__ import annotations

from typing import Any

from webhook.core.template import DynamicDict, DynamicList, Interpolation

ALLOWED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
ALLOWED_PROFILE_TYPES = ("RuntimeDefault", "Localhost")


def container_violations(container: dict[str, Any]) -> list[str]:
    sc = container.get("securityContext") or {}
    name = container.get("name", "?")
    found = []
    if sc.get("privileged"):
        found.append("securityContext.privileged must not be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        found.append("securityContext.allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        found.append("securityContext.capabilities.drop must include ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append("securityContext.capabilities.add may only hold NET_BIND_SERVICE")
    if sc.get("runAsNonRoot") is not True:
        found.append("securityContext.runAsNonRoot must be true")
    if sc.get("runAsUser") == 0:
        found.append("securityContext.runAsUser must not be 0")
    if (sc.get("seccompProfile") or {}).get("type") not in ALLOWED_PROFILE_TYPES:
        found.append("securityContext.seccompProfile.type must be RuntimeDefault or Localhost")
    if (sc.get("appArmorProfile") or {}).get("type") not in (None, *ALLOWED_PROFILE_TYPES):
        found.append("securityContext.appArmorProfile.type must be RuntimeDefault or Localhost (or unset)")
    if sc.get("procMount") not in (None, "Default"):
        found.append("securityContext.procMount must be Default")
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append("securityContext.seLinuxOptions may only set an allowed type")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        found.append("securityContext.windowsOptions.hostProcess must not be true")
    if any(port.get("hostPort") for port in container.get("ports") or []):
        found.append("ports[].hostPort must not be set")
    return [f"container {name}: {rule}" for rule in found]


def volume_violations(volume: dict[str, Any]) -> list[str]:
    kinds = set(volume) - {"name"}
    bad = sorted(kinds - ALLOWED_VOLUME_TYPES)
    return [f"volume {volume.get('name', '?')}: type {', '.join(bad)} is not allowed"] if bad else []


def template_violations(container: Any) -> list[str]:
    """Fields the rules look at (securityContext, ports[].hostPort) that a placeholder fills in: a Pod's
    annotation could then make the injected container break a rule that the sample render keeps."""
    name = container.get("name", "?")
    found = [f"securityContext{path} is set from a placeholder" for path in _placeholders(container.get("securityContext"))]
    for i, port in enumerate(container.get("ports") or []):
        if isinstance(port, dict) and type(port.get("hostPort")) is Interpolation:
            found.append(f"ports[{i}].hostPort is set from a placeholder")
    return [f"container {name}: {rule}; a Pod's annotation could change it" for rule in found]


def _placeholders(node: Any, path: str = "") -> list[str]:
    if type(node) is Interpolation:
        return [path]
    if type(node) is DynamicDict:
        return [p for key, value in node.items() for p in _placeholders(value, f"{path}.{key}")]
    if type(node) is DynamicList:
        return [p for i, value in enumerate(node) for p in _placeholders(value, f"{path}[{i}]")]
    return []
