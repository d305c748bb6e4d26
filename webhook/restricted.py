"""The Pod Security Standard "restricted" rules that apply to one injected container or volume.

Checked at catalogue load (a violating entry loads with a warning) and in the tests for the built-ins.
Pod-level fields cannot be counted on (the app owns them), so every rule must hold on the container.
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


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
    if (sc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        found.append("securityContext.seccompProfile.type must be RuntimeDefault or Localhost")
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
