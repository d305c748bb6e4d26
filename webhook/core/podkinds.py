"""Pods the entries must leave alone or refuse: mirror (static) Pods, Windows Pods, host-network Pods.

The built-in entries are Linux containers that share the Pod's network namespace; these kinds of Pod
break that assumption. What each gets (README, "Pods the entries leave alone"):
- a mirror Pod is never changed: the kubelet runs the static Pod from its file on the node, and the API
  object only mirrors it, so a patch could not reach what runs;
- a Windows Pod gets no entry: one the Pod asks for, or a mandatory rule adds, is denied; one a
  Namespace default or another rule adds is skipped with a warning;
- in a host-network Pod an entry whose containers declare ports is denied: a declared port is a port of
  the node, and 127.0.0.1 is the node's loopback, shared with every host-network process.
"""

from __future__ import annotations

from typing import Any

from webhook.core.pod import PodView

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def is_mirror(pod: PodView) -> bool:
    return MIRROR_ANNOTATION in pod.annotations


def is_windows(pod: PodView) -> bool:
    os = pod.spec.get("os")
    return isinstance(os, dict) and os.get("name") == "windows"


def host_network_clash(pod: PodView, entry: str, container: dict[str, Any]) -> str | None:
    """Why `container` of `entry` cannot run in this Pod's network, or None."""
    if pod.spec.get("hostNetwork") is not True or not container.get("ports"):
        return None
    ports = ", ".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in container["ports"])
    return (f"{entry}: the Pod uses hostNetwork, where its container {container['name']!r} would listen on the "
            f"node's port {ports} and on the node's 127.0.0.1, shared with every host-network process; "
            f"run the Pod without hostNetwork, or without {entry}")
