"""Writing an audit as PolicyReports: one `podpatterns-audit` per namespace, created or replaced, and removed from
namespaces that no longer have any result.

What it does with the API (and so the RBAC it needs on policyreports.wgpolicyk8s.io): `list` the reports it
manages (label app.kubernetes.io/managed-by=podpatterns) in the namespace audited or in all of them; `create`
a report a namespace does not have yet; `update` one whose results changed, with the resourceVersion it read
(on a conflict, as when another replica wrote it meanwhile, it reads it again with `get` and retries once); and
`delete` the report of a namespace without any result any more. A report that says what it said already is
not written again, so two replicas auditing the same cluster write each change once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from webhook.cluster import kubeclient
from webhook.core import policyreport
from webhook.core.podaudits import Audit

GROUP, VERSION, PLURAL = policyreport.GROUP, policyreport.VERSION, policyreport.PLURAL
SELECTOR = "=".join(policyreport.MANAGED_BY)


class ReportsUnavailable(Exception):
    """The cluster does not serve PolicyReports: the CRD is not installed."""


@dataclass
class Written:
    created: list[str] = field(default_factory=list)  # namespaces
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # namespaces deleted (or terminating) meanwhile

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "deleted": self.deleted}

    def sentence(self) -> str:
        counts = [f"{len(names)} {what}" for what, names in self.as_dict().items() if names]
        return f"PolicyReports {policyreport.NAME}: {', '.join(counts) or 'none to write'}"


def read(api: Any, namespace: str | None) -> dict[str, dict[str, Any]]:
    """The reports podpatterns wrote, by namespace, in `namespace` (None: all). Raises ReportsUnavailable when the
    cluster has no PolicyReport resource, else the client's ApiException."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    objects = client.CustomObjectsApi(api)
    options = {"label_selector": SELECTOR, "_preload_content": False, "_request_timeout": kubeclient.TIMEOUT}
    try:
        if namespace is None:
            response = objects.list_cluster_custom_object(GROUP, VERSION, PLURAL, **options)
        else:
            response = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **options)
    except ApiException as err:
        if err.status == 404 and not _names_an_object(err):
            raise ReportsUnavailable(
                f"this cluster has no PolicyReport resource ({PLURAL}.{GROUP}/{VERSION}): the API answered 404 "
                f"{_message(err)}. Install the CRD — the chart does with --set audit.installPolicyReportCRD=true; "
                f"Kyverno and Policy Reporter install it too — or leave out writing reports") from None
        raise
    reports = {}
    for item in json.loads(response.data).get("items") or []:
        meta = item.get("metadata") or {}
        if meta.get("name") == policyreport.NAME:
            reports[meta.get("namespace") or ""] = item
    return reports


def write(api: Any, audit: Audit, existing: Mapping[str, dict[str, Any]], now: float) -> Written:
    """Brings the reports of the audited namespaces, and of those in `existing` (what `read` found), in line with
    `audit`."""
    from kubernetes import client

    objects = client.CustomObjectsApi(api)
    written = Written()
    for namespace, pods in sorted(audit.by_namespace().items()):
        old = existing.get(namespace)
        report = policyreport.build(namespace, pods, now, old)
        if report is None:
            continue
        if old is not None and policyreport.same(report, old):
            written.unchanged.append(namespace)
        elif old is not None:
            _replace(objects, namespace, report, old)
            written.updated.append(namespace)
        elif _create(objects, namespace, report):
            written.created.append(namespace)
        else:
            written.gone.append(namespace)
    kept = set(written.created) | set(written.updated) | set(written.unchanged)
    for namespace in sorted(set(existing) - kept - set(written.gone)):
        _delete(objects, namespace)
        written.deleted.append(namespace)
    return written


def _create(objects: Any, namespace: str, report: dict[str, Any]) -> bool:
    """Creates the report; False when the namespace is gone or terminating. One created meanwhile (another
    replica) is replaced instead."""
    from kubernetes.client.exceptions import ApiException

    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, report,
                                                _request_timeout=kubeclient.TIMEOUT)
    except ApiException as err:
        if _namespace_gone(err):
            return False
        if err.status != 409:
            raise
        _replace(objects, namespace, report, None)
    return True


def _replace(objects: Any, namespace: str, report: dict[str, Any], old: Mapping[str, Any] | None) -> None:
    from kubernetes.client.exceptions import ApiException

    for attempt in (1, 2):
        if old is None:
            old = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policyreport.NAME,
                                                       _request_timeout=kubeclient.TIMEOUT)
        body = {**report, "metadata": {**report["metadata"],
                                       "resourceVersion": (old.get("metadata") or {}).get("resourceVersion")}}
        try:
            objects.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policyreport.NAME, body,
                                                     _request_timeout=kubeclient.TIMEOUT)
            return
        except ApiException as err:
            if err.status != 409 or attempt == 2:
                raise
            old = None  # written meanwhile (another replica): read it again


def _delete(objects: Any, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policyreport.NAME,
                                                _request_timeout=kubeclient.TIMEOUT)
    except ApiException as err:
        if err.status != 404:
            raise


def _status(err: Any) -> dict[str, Any]:
    try:
        body = json.loads(err.body)
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _message(err: Any) -> str:
    return str(_status(err).get("message") or err.reason)


def _names_an_object(err: Any) -> bool:
    """A 404 about an object (its Status names it) rather than about the resource, which the API does not serve."""
    return bool((_status(err).get("details") or {}).get("name"))


def _namespace_gone(err: Any) -> bool:
    details = _status(err).get("details") or {}
    if err.status == 404 and details.get("kind") == "namespaces":
        return True
    return err.status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in details.get("causes") or []
                                     if isinstance(c, dict))
