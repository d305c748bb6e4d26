"""An independent checker of the Pod Security Standards, profile "restricted" (baseline included).

Written from the standard's own text (kubernetes.io/docs/concepts/security/pod-security-standards),
control by control, for a whole Pod: pod-level fields and every container of `containers`,
`initContainers` and `ephemeralContainers`. It shares nothing with webhook/catalog/restricted.py, which the
tests cross-check against it. `violations(pod)` lists "control: field: value" for each breach.
"""

from __future__ import annotations

from typing import Any, Iterator

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

# Baseline "Capabilities": what may be added beyond the runtime's default set.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
# Restricted "Capabilities": drop ALL, add at most this.
RESTRICTED_CAPABILITIES = {"NET_BIND_SERVICE"}
# Baseline "SELinux": allowed seLinuxOptions.type values (undefined too).
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Baseline "Sysctls": the safe subset.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
# Restricted "Volume Types": only these (besides the volume's name).
VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

CONTROLS = (
    "HostProcess", "Host Namespaces", "Privileged Containers", "Capabilities", "HostPath Volumes", "Host Ports",
    "AppArmor", "SELinux", "/proc Mount Type", "Seccomp", "Sysctls",  # baseline
    "Volume Types", "Privilege Escalation", "Running as Non-root", "Running as Non-root user",
    "Seccomp (restricted)", "Capabilities (restricted)",  # restricted
)


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in CONTAINER_LISTS:
        for i, container in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{i}]", container


def violations(pod: dict[str, Any]) -> list[str]:
    """Every breach of the restricted profile in `pod`, as 'control: field: value'."""
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    annotations = _get(pod, "metadata", "annotations") or {}
    found: list[str] = []

    def bad(control: str, field: str, value: Any) -> None:
        assert control in CONTROLS, control
        found.append(f"{control}: {field}: {value!r}")

    # --- Baseline ---
    # HostProcess: undefined/nil or false, on the Pod and every container.
    if _get(psc, "windowsOptions", "hostProcess") not in (None, False):
        bad("HostProcess", "spec.securityContext.windowsOptions.hostProcess", _get(psc, "windowsOptions", "hostProcess"))
    # Host Namespaces: hostNetwork, hostPID, hostIPC undefined/nil or false.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field) not in (None, False):
            bad("Host Namespaces", f"spec.{field}", spec.get(field))
    # HostPath Volumes: undefined/nil. Restricted Volume Types: only the listed kinds.
    for i, volume in enumerate(spec.get("volumes") or []):
        if volume.get("hostPath") is not None:
            bad("HostPath Volumes", f"spec.volumes[{i}].hostPath", volume["hostPath"])
        for kind, value in volume.items():
            if kind != "name" and kind not in VOLUME_TYPES and value is not None:
                bad("Volume Types", f"spec.volumes[{i}].{kind}", value)
    # AppArmor on the Pod: appArmorProfile.type undefined, RuntimeDefault or Localhost; the annotations
    # runtime/default or localhost/*.
    if _get(psc, "appArmorProfile", "type") not in (None, "RuntimeDefault", "Localhost"):
        bad("AppArmor", "spec.securityContext.appArmorProfile.type", _get(psc, "appArmorProfile", "type"))
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (value == "runtime/default" or str(value).startswith("localhost/")):
            bad("AppArmor", f"metadata.annotations[{key}]", value)
    # SELinux on the Pod.
    _selinux(psc.get("seLinuxOptions"), "spec.securityContext.seLinuxOptions", bad)
    # Seccomp on the Pod: not Unconfined (restricted: see below).
    pod_seccomp = _get(psc, "seccompProfile", "type")
    if pod_seccomp == "Unconfined":
        bad("Seccomp", "spec.securityContext.seccompProfile.type", pod_seccomp)
    # Sysctls: only the safe subset.
    for i, sysctl in enumerate(psc.get("sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad("Sysctls", f"spec.securityContext.sysctls[{i}].name", sysctl.get("name"))
    # --- Restricted, pod level ---
    # Running as Non-root: the Pod sets runAsNonRoot true, or every container does (checked below).
    pod_non_root = psc.get("runAsNonRoot")
    if pod_non_root is False:
        bad("Running as Non-root", "spec.securityContext.runAsNonRoot", pod_non_root)
    # Running as Non-root user: runAsUser undefined or non-zero.
    if psc.get("runAsUser") == 0:
        bad("Running as Non-root user", "spec.securityContext.runAsUser", 0)

    for where, container in _containers(spec):
        sc = container.get("securityContext") or {}
        at = f"{where}.securityContext"
        if _get(sc, "windowsOptions", "hostProcess") not in (None, False):
            bad("HostProcess", f"{at}.windowsOptions.hostProcess", _get(sc, "windowsOptions", "hostProcess"))
        # Privileged Containers: undefined/nil or false.
        if sc.get("privileged") not in (None, False):
            bad("Privileged Containers", f"{at}.privileged", sc.get("privileged"))
        # Capabilities (baseline): add only from the default set.
        added = _get(sc, "capabilities", "add") or []
        for cap in added:
            if cap not in BASELINE_CAPABILITIES:
                bad("Capabilities", f"{at}.capabilities.add", cap)
        # Host Ports: undefined or 0.
        for j, port in enumerate(container.get("ports") or []):
            if port.get("hostPort") not in (None, 0):
                bad("Host Ports", f"{where}.ports[{j}].hostPort", port.get("hostPort"))
        # AppArmor on the container.
        if _get(sc, "appArmorProfile", "type") not in (None, "RuntimeDefault", "Localhost"):
            bad("AppArmor", f"{at}.appArmorProfile.type", _get(sc, "appArmorProfile", "type"))
        _selinux(sc.get("seLinuxOptions"), f"{at}.seLinuxOptions", bad)
        # /proc Mount Type: undefined/nil or Default.
        if sc.get("procMount") not in (None, "Default"):
            bad("/proc Mount Type", f"{at}.procMount", sc.get("procMount"))
        seccomp = _get(sc, "seccompProfile", "type")
        if seccomp == "Unconfined":
            bad("Seccomp", f"{at}.seccompProfile.type", seccomp)
        # Privilege Escalation: allowPrivilegeEscalation must be false.
        if sc.get("allowPrivilegeEscalation") is not False:
            bad("Privilege Escalation", f"{at}.allowPrivilegeEscalation", sc.get("allowPrivilegeEscalation"))
        # Running as Non-root: the container's true, or undefined when the Pod's is true.
        non_root = sc.get("runAsNonRoot")
        if not (non_root is True or (non_root is None and pod_non_root is True)):
            bad("Running as Non-root", f"{at}.runAsNonRoot", non_root)
        if sc.get("runAsUser") == 0:
            bad("Running as Non-root user", f"{at}.runAsUser", 0)
        # Seccomp (restricted): RuntimeDefault or Localhost, or undefined when the Pod sets one of them.
        if not (seccomp in ("RuntimeDefault", "Localhost")
                or (seccomp is None and pod_seccomp in ("RuntimeDefault", "Localhost"))):
            bad("Seccomp (restricted)", f"{at}.seccompProfile.type", seccomp)
        # Capabilities (restricted): drop includes ALL; add only NET_BIND_SERVICE.
        if "ALL" not in (_get(sc, "capabilities", "drop") or []):
            bad("Capabilities (restricted)", f"{at}.capabilities.drop", _get(sc, "capabilities", "drop"))
        for cap in added:
            if cap not in RESTRICTED_CAPABILITIES:
                bad("Capabilities (restricted)", f"{at}.capabilities.add", cap)
    return found


def _selinux(options: Any, field: str, bad) -> None:
    # SELinux: type undefined, "" or one of the container types; user and role undefined or "".
    if not options:
        return
    if options.get("type") not in (None, *SELINUX_TYPES):
        bad("SELinux", f"{field}.type", options.get("type"))
    for key in ("user", "role"):
        if options.get(key) not in (None, ""):
            bad("SELinux", f"{field}.{key}", options.get(key))
