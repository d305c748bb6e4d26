"""The /mutate endpoint over real TLS, with AdmissionReviews recorded from a real kube-apiserver."""

from __future__ import annotations

import copy
import json

import httpx
import pytest

from tests.helpers import (
    all_reviews,
    apply,
    assert_valid_pod,
    ops_of,
    review,
    review_with,
)

# What each recorded review must get: (patched?, entries expected in the status annotation)
EXPECTED = {
    "pod-create-annotated": ["log-shipper"],
    "pod-create-dryrun": ["json-log-adapter"],
    "pod-create-generatename-owned": ["db-ambassador"],
    "pod-create-native-sidecar": [],  # no annotation
    "pod-update-annotate": [],  # UPDATE never injects
    "pod-update-ephemeralcontainers": [],  # subresource
}


def answer(server, body) -> dict:
    reply = server.mutate(body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    doc = reply.json()
    assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
    assert doc["response"]["uid"] == body["request"]["uid"]
    return doc["response"]


def test_every_recorded_review_is_covered():
    assert sorted(EXPECTED) == all_reviews()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_review_gets_the_right_answer(server, name):
    body = review(name)
    response = answer(server, body)
    assert response["allowed"] is True
    pod = body["request"]["object"]
    if not EXPECTED[name]:
        assert "patch" not in response
        return
    patched = apply(pod, ops_of(response))
    assert_valid_pod(patched)
    status = json.loads(patched["metadata"]["annotations"]["podpatterns.io/status"])
    assert [s["entry"] for s in status] == EXPECTED[name]
    injected = {c["name"]: c for c in patched["spec"]["initContainers"]}
    for entry in EXPECTED[name]:
        assert injected[entry]["restartPolicy"] == "Always"  # native sidecar
    assert patched["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == pod["spec"]["containers"][0]["name"]
    # Reinvocation / re-created Pod: the patched Pod gets no second copy.
    again = copy.deepcopy(body)
    again["request"]["object"] = patched
    assert "patch" not in answer(server, again)


def test_generate_name_pod_gets_its_upstream_and_a_warning_for_its_own_db_host(server):
    body = review("pod-create-generatename-owned")
    response = answer(server, body)
    patched = apply(body["request"]["object"], ops_of(response))
    proxy = patched["spec"]["initContainers"][0]
    assert proxy["name"] == "db-ambassador"
    assert proxy["args"][-1] == "TCP:postgres.prod.svc:5432"
    assert "TCP-LISTEN:5432,bind=127.0.0.1,fork,reuseaddr,max-children=100,backlog=1024" in proxy["args"]
    assert proxy["ports"] == [{"name": "db-ambassador", "containerPort": 5432, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in patched["spec"]["containers"][0]["env"]}
    assert env == {"DB_HOST": "localhost", "DB_PORT": "5432"}  # the app's own values are kept
    assert response["warnings"] == ["container checkout already sets DB_HOST; db-ambassador kept that value"]


def test_dry_run_is_answered_exactly_like_a_real_request(server):
    dry = review("pod-create-dryrun")
    real = copy.deepcopy(dry)
    real["request"]["dryRun"] = False
    assert answer(server, dry) == answer(server, real)


def test_all_three_patterns_in_one_pod(server):
    body = review_with({
        "podpatterns.io/inject": "log-shipper, json-log-adapter, db-ambassador",
        "db-ambassador.podpatterns.io/upstream": "pg.dev.svc:5432",
        "db-ambassador.podpatterns.io/port": "6432",
        "log-shipper.podpatterns.io/logDir": "/logs",
    })
    response = answer(server, body)
    patched = apply(body["request"]["object"], ops_of(response))
    assert_valid_pod(patched)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["log-shipper", "json-log-adapter", "db-ambassador"]
    app = patched["spec"]["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in app["volumeMounts"]}
    # Both logging entries share the one log volume, mounted where each was told to look.
    assert mounts["/logs"] == mounts["/var/log/app"] == "podpatterns-app-logs"
    assert [v["name"] for v in patched["spec"]["volumes"]].count("podpatterns-app-logs") == 1
    env = {e["name"]: e["value"] for e in app["env"]}
    assert env["DB_HOST"] == "127.0.0.1" and env["DB_PORT"] == "6432" and env["LOG_DIR"] == "/logs"
    assert response["warnings"] == ["container web already sets LOG_DIR; json-log-adapter kept that value"]


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"podpatterns.io/inject": "log-shipper, nope"},
         "annotation podpatterns.io/inject: 'log-shipper, nope' names unknown entry 'nope'; "
         "known entries: db-ambassador, json-log-adapter, log-shipper"),
        ({"podpatterns.io/inject": "db-ambassador"},
         "db-ambassador: required parameter upstream is missing; set annotation db-ambassador.podpatterns.io/upstream "
         "to host:port, a DNS name (labels of 1-63 letters, digits and inner hyphens; no empty label; 253 characters at most) or an IPv4 address, and a port from 1 to 65535 (host:port of the database)"),
        ({"podpatterns.io/inject": "db-ambassador", "db-ambassador.podpatterns.io/upstream": "pg:5432",
          "db-ambassador.podpatterns.io/port": "fast"},
         "annotation db-ambassador.podpatterns.io/port: value 'fast' is not accepted: expected an integer from 1024 to 65535"),
        ({"podpatterns.io/inject": "db-ambassador", "db-ambassador.podpatterns.io/upstream": "pg:5432\n-x"},
         "annotation db-ambassador.podpatterns.io/upstream: value 'pg:5432\\n-x' is not accepted: expected "
         "host:port, a DNS name (labels of 1-63 letters, digits and inner hyphens; no empty label; 253 characters at most) or an IPv4 address, and a port from 1 to 65535"),
        ({"podpatterns.io/inject": "log-shipper", "log-shipper.podpatterns.io/level": "debug"},
         "annotation log-shipper.podpatterns.io/level: log-shipper has no parameter 'level'; its parameters: endpoint, logDir, logVolumeSize, bufferMB, "
         "cpuRequest, memoryRequest, cpuLimit, memoryLimit"),
        ({"podpatterns.io/inject": "log-shipper", "podpatterns.io/status": "{not json"},
         "annotation podpatterns.io/status: '{not json' is not a record written by podpatterns "
         '(a JSON list of {"entry", "pattern", "digest"}); remove the annotation'),
    ],
    ids=["unknown-entry", "missing-required", "wrong-type", "control-characters", "unknown-parameter", "bad-status"],
)
def test_user_mistakes_are_denied_with_a_message_naming_them(server, annotations, message):
    response = answer(server, review_with(annotations))
    assert response["allowed"] is False
    assert response["status"] == {"code": 400, "message": message, "reason": "BadRequest"}
    assert "patch" not in response


def test_container_name_clash_is_denied_naming_both_sides(server):
    body = review_with({"podpatterns.io/inject": "log-shipper"})
    body["request"]["object"]["spec"]["initContainers"] = [{"name": "log-shipper", "image": "busybox"}]
    response = answer(server, body)
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "log-shipper: its container 'log-shipper' clashes with the container 'log-shipper' in spec.initContainers")


def test_port_clash_is_denied(server):
    body = review_with({"podpatterns.io/inject": "db-ambassador", "db-ambassador.podpatterns.io/upstream": "pg:5432"})
    body["request"]["object"]["spec"]["containers"][0]["ports"].append({"containerPort": 5432, "protocol": "TCP"})
    response = answer(server, body)
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "db-ambassador: port 5432/TCP of its container 'db-ambassador' clashes with container 'web', which uses "
        "the same port (containers share the Pod's network)")


def test_mount_path_and_volume_clashes_are_denied(server):
    body = review_with({"podpatterns.io/inject": "log-shipper"})
    spec = body["request"]["object"]["spec"]
    spec["volumes"].append({"name": "mine", "emptyDir": {}})
    spec["containers"][0]["volumeMounts"].append({"name": "mine", "mountPath": "/var/log/app"})
    response = answer(server, body)
    assert response["status"]["message"] == (
        "log-shipper: mount path /var/log/app in container 'web' clashes with its mount of volume 'mine'; "
        "change one of the two paths")
    body = review_with({"podpatterns.io/inject": "log-shipper"})
    body["request"]["object"]["spec"]["volumes"].append({"name": "podpatterns-app-logs", "hostPath": {"path": "/x"}})
    response = answer(server, body)
    assert response["status"]["message"] == (
        "log-shipper: its volume 'podpatterns-app-logs' clashes with a different volume of that name")


def test_soft_problems_are_warnings(server):
    body = review_with({"podpatterns.io/inject": "log-shipper,log-shipper",
                        "db-ambassador.podpatterns.io/upstream": "pg:5432",
                        "nosuch.podpatterns.io/x": "1"})
    response = answer(server, body)
    assert response["allowed"] is True and ops_of(response)
    assert response["warnings"] == [
        "annotation podpatterns.io/inject: log-shipper is listed twice; injected once",
        "annotation db-ambassador.podpatterns.io/upstream: db-ambassador is not requested for this Pod; ignored",
        "annotation nosuch.podpatterns.io/x: there is no catalogue entry 'nosuch'; ignored",
    ]


def test_other_kinds_pass_unchanged(server):
    body = review("pod-create-annotated")
    body["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    body["request"]["object"] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    assert answer(server, body) == {"uid": body["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("a string", "the object is not a valid Pod: the Pod must be an object, got string"),
        ({"metadata": {}, "spec": {"containers": "web"}}, "the object is not a valid Pod: spec.containers must be a list, got string"),
        ({"metadata": {"annotations": {"podpatterns.io/inject": 7}}, "spec": {"containers": [{"name": "a"}]}},
         "the object is not a valid Pod: metadata.annotations['podpatterns.io/inject'] must be a string, got int"),
        ({"metadata": {}, "spec": {}}, "the object is not a valid Pod: spec.containers must list at least one container"),
        ({"metadata": {}, "spec": {"containers": [{"name": "a"}], "serviceAccountName": {"a": [1]}}},
         "the object is not a valid Pod: spec.serviceAccountName must be a string, got object"),
        ({"metadata": {"labels": {"k" * 300: 1}}, "spec": {"containers": [{"name": "a"}]}},
         f"the object is not a valid Pod: metadata.labels['{'k' * 100}'…] must be a string, got int"),
    ],
    ids=["string", "containers-not-list", "annotation-not-string", "no-containers", "service-account-not-string",
         "long-key-cut-short"],
)
def test_a_pod_review_with_a_malformed_pod_is_denied(server, obj, message):
    body = review("pod-create-annotated")
    body["request"]["object"] = obj
    response = answer(server, body)
    assert response["allowed"] is False
    assert response["status"]["message"] == message


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"{not json", "body is not valid JSON: "),
        (b"[1, 2]", "body must be a JSON object (an AdmissionReview), got a JSON list"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "AdmissionReview has no request object"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {}}}',
         "AdmissionReview request has no uid"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "1"}}',
         "body must be an AdmissionReview with apiVersion admission.k8s.io/v1"),
        (b"", "body is not valid JSON: "),
    ],
    ids=["malformed", "array", "no-request", "no-uid", "v1beta1", "empty"],
)
def test_a_body_that_is_not_an_admission_review_gets_400_with_a_json_error(server, content, error):
    reply = server.mutate(content)
    assert reply.status_code == 400
    assert reply.json()["code"] == 400
    assert reply.json()["error"].startswith(error)


def test_a_huge_body_gets_413_and_the_server_keeps_serving(server):
    reply = server.mutate(b"x" * (3 * 1024 * 1024 + 1))
    assert reply.status_code == 413
    assert reply.json()["error"] == "request body is larger than 3145728 bytes"
    assert answer(server, review("pod-create-annotated"))["allowed"] is True


def test_health_readiness_and_metrics(server):
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json() == {"status": "ready"}
    answer(server, review("pod-create-annotated"))
    answer(server, review_with({"podpatterns.io/inject": "nope"}))
    text = server.client.get("/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values['podpatterns_admission_requests_total{outcome="injected"}'] >= 1
    assert values['podpatterns_admission_requests_total{outcome="denied"}'] >= 1
    assert values['podpatterns_injections_total{entry="log-shipper"}'] >= 1
    assert values['podpatterns_admission_duration_seconds_bucket{le="0.005"}'] >= 1


def test_plain_http_is_not_served(server):
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)


def _handshake(server, maximum, ciphers: str) -> str:
    import socket
    import ssl
    import warnings

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # offering old versions on purpose
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname="localhost") as tls:
                return f"{tls.version()} {tls.cipher()[0]}"
        except ssl.SSLError as err:
            return f"refused: {err.reason}"


def test_tls_is_1_2_or_newer_with_modern_ciphers_only(server):
    import ssl

    # The same client settings succeed with TLS 1.2 + AEAD, so a refusal below is the server's doing.
    assert _handshake(server, ssl.TLSVersion.TLSv1_2, "ALL:@SECLEVEL=0") == "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384"
    assert _handshake(server, ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0").startswith("refused")
    assert _handshake(server, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0").startswith("refused")
    assert _handshake(server, ssl.TLSVersion.TLSv1_3, "ALL").startswith("TLSv1.3")
