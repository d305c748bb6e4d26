"""lifecycle: auto — the cluster's version, read once with the real `kubernetes` client, or a setting."""

from __future__ import annotations

import pytest

from tests.helpers import Server, apply, assert_valid_pod, ops_of, review_with
from tests.kubeapi import KubeApi
from webhook.cluster import kubeversion


def version(minor: str, git: str) -> dict:
    """A /version answer as a real kube-apiserver gives it (GKE reports minors like "28+")."""
    return {"major": "1", "minor": minor, "gitVersion": git, "gitCommit": "0" * 40, "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.1", "compiler": "gc", "platform": "linux/amd64"}


@pytest.mark.parametrize(
    ("status", "body", "native", "logged"),
    [
        (200, version("28+", "v1.28.9-gke.1"), False, "cluster version read"),
        (200, version("29", "v1.29.0"), True, "cluster version read"),
        (200, version("36", "v1.36.1"), True, "cluster version read"),
        # Unknown: assume a current cluster, and say so.
        (500, {"message": "boom"}, True, "could not read the cluster version; assuming native sidecars"),
    ],
)
def test_the_cluster_version_decides_native_sidecars(caplog, status, body, native, logged):
    with KubeApi() as api:
        if status == 200:
            api.version = body
        else:
            api.fault("GET", "/version", status=status, message=body["message"])
        with caplog.at_level("INFO", logger="podpatterns"):
            assert kubeversion.native_sidecars(None, api.client()) is native
        assert api.requests and api.requests[0].path.startswith("/version")
        assert [r.getMessage() for r in caplog.records] == [logged]


def test_a_setting_wins_and_is_checked():
    assert kubeversion.native_sidecars("1.28") is False
    assert kubeversion.native_sidecars("v1.30.2") is True
    with pytest.raises(ValueError, match="not a Kubernetes version: 'latest'"):
        kubeversion.parse("latest")


def test_serve_with_an_old_kube_version_and_another_prefix(tmp_path):
    server = Server(tmp_path, "--quiet", "--kube-version", "1.28", "--prefix", "inject.example.com")
    try:
        body = review_with({"inject.example.com/inject": "db-ambassador",
                            "db-ambassador.inject.example.com/upstream": "pg:5432"})
        response = server.mutate(body).json()["response"]
        patched = apply(body["request"]["object"], ops_of(response))
        assert_valid_pod(patched)
        assert [c["name"] for c in patched["spec"]["containers"]] == ["web", "db-ambassador"]
        assert "restartPolicy" not in patched["spec"]["containers"][1]
        assert "inject.example.com/status" in patched["metadata"]["annotations"]
        ignored = server.mutate(review_with({"podpatterns.io/inject": "nope"})).json()["response"]
        assert ignored == {"uid": body["request"]["uid"], "allowed": True}  # the default prefix means nothing now
    finally:
        server.stop()
