"""The connection to the Kubernetes API: in-cluster when running in a Pod, else the user's kubeconfig."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client is imported only when a cluster is used
    from kubernetes.client import ApiClient

# (connect, read) seconds for every call: a hung apiserver must not hang a check or the start.
TIMEOUT = (5.0, 15.0)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def api_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """An `ApiClient`, found as kubectl finds one: `kubeconfig` (else $KUBECONFIG, else ~/.kube/config) and its
    `context` (else the current one); in a Pod with neither given, the in-cluster service account.
    Raises `kubernetes.config.ConfigException` when there is nothing to connect to."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None and context is None \
            and not os.environ.get("KUBECONFIG"):
        configuration = client.Configuration()
        # It re-reads the service account token as the kubelet rotates it.
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return config.new_client_from_config(config_file=kubeconfig_path(kubeconfig), context=context)


def kubeconfig_path(kubeconfig: str | None = None) -> str:
    """`kubeconfig`, else the first file of $KUBECONFIG (read now: the client's own default is frozen at its
    import), else ~/.kube/config."""
    return kubeconfig or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or "~/.kube/config"


def current_namespace() -> str | None:
    """The Pod's namespace: $POD_NAMESPACE (the downward API), else the service account's namespace file."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
