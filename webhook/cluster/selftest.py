"""The self-test: a server-side dry-run creation of an annotated Pod, and whether the webhook injected it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from webhook.cluster import kubeclient

GENERATE_NAME = "podpatterns-selftest-"
DEFAULT_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: a dry run creates nothing


@dataclass(frozen=True)
class Outcome:
    injected: bool
    message: str  # what came back, or why it was refused
    status: list[dict[str, Any]] | None = None  # the status annotation's records
    added: tuple[str, ...] = ()  # containers the Pod came back with that it was sent without ("initContainers/x")
    warnings: tuple[str, ...] = ()  # admission warnings (the Warning headers kubectl prints)
    name: str = ""  # the name the apiserver generated


def pod(namespace: str, entry: str, prefix: str, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """A Pod asking for `entry`, which Pod Security "restricted" admits, in `namespace`."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": GENERATE_NAME, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "podpatterns-selftest"},
                     "annotations": {f"{prefix}/inject": entry}},
        "spec": {
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app", "image": image,
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}},
            }],
        },
    }


def dry_run(api: Any, namespace: str, entry: str, prefix: str, image: str = DEFAULT_IMAGE) -> Outcome:
    """Asks the apiserver to create the Pod with `dryRun=All` (every admission webhook and policy runs, nothing is
    stored) and reads what came back. A refusal by admission (a webhook's denial, a webhook that cannot be called, a
    policy) is an Outcome that is not injected; any other API error is raised (the client's ApiException)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    sent = pod(namespace, entry, prefix, image)
    try:
        response = client.CoreV1Api(api).create_namespaced_pod(namespace, sent, dry_run="All", _preload_content=False,
                                                                 _request_timeout=kubeclient.TIMEOUT)
    except ApiException as err:
        message = _message(err)
        if "admission webhook" in message or "failed calling webhook" in message or "ValidatingAdmissionPolicy" in message:
            return Outcome(False, f"refused at admission: {message}")
        raise
    created = json.loads(response.data)
    warnings = tuple(response.headers.getlist("Warning")) if hasattr(response.headers, "getlist") else ()
    name = (created.get("metadata") or {}).get("name") or ""
    key = f"{prefix}/status"
    text = ((created.get("metadata") or {}).get("annotations") or {}).get(key)
    before = {("containers", c["name"]) for c in sent["spec"]["containers"]}
    added = tuple(f"{kind}/{c.get('name')}" for kind in ("initContainers", "containers")
                  for c in (created.get("spec") or {}).get(kind) or [] if (kind, c.get("name")) not in before)
    if text is None:
        return Outcome(False, f"came back without the annotation {key}: the webhook was not called for it (is namespace "
                              f"{namespace} in its scope?) or injected nothing", None, added, warnings, name)
    try:
        records = json.loads(text)
        entries = [r.get("entry") for r in records]
    except (ValueError, AttributeError, TypeError):
        return Outcome(False, f"came back with an unreadable {key}: {text!r}", None, added, warnings, name)
    if entry not in entries:
        return Outcome(False, f"came back with {key} listing {entries}, not {entry}", records, added, warnings, name)
    if not added:
        return Outcome(False, f"came back with {key} listing {entry} but no container added", records, added, warnings, name)
    return Outcome(True, f"came back injected with {entry}", records, added, warnings, name)


def _message(err: Any) -> str:
    try:
        return json.loads(err.body).get("message") or str(err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)
