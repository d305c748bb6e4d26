"""Self-managed certificates: the Secret shared by all replicas, against a stand-in Kubernetes API that the
real `kubernetes` client talks to over HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import Server, free_port, podpatterns_command
from tests.kubeapi import KubeApi
from webhook import certs
from webhook.cluster import kubeclient
from webhook.cluster.certsecret import (
    CertificateSecret,
    Lifetimes,
    Material,
    StartError,
    Target,
)
from webhook.cluster.webhookconfig import mutating_webhook_configuration

NS, SECRET, SERVICE, CONFIG = "podpatterns", "podpatterns-tls", "podpatterns", "podpatterns"
SECRET_PATH = f"/api/v1/namespaces/{NS}/secrets/{SECRET}"
CONFIG_PATH = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}"
NAMES = [SERVICE, f"{SERVICE}.{NS}", f"{SERVICE}.{NS}.svc", f"{SERVICE}.{NS}.svc.cluster.local"]
# Stable for the replica that made it (renews 10 days before a 20-day expiry); due for one with the defaults.
SHORT = Lifetimes(serving=dt.timedelta(days=20), renew_before=dt.timedelta(days=10))


@pytest.fixture
def api(tmp_path, monkeypatch):
    """The stand-in, holding the chart's webhook configuration, and KUBECONFIG pointing at it."""
    with KubeApi() as running:
        running.put(webhook_configuration(), CONFIG_PATH)
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # CI may itself run in a Pod
        monkeypatch.setenv("KUBECONFIG", str(running.kubeconfig(tmp_path / "kubeconfig")))
        yield running


def webhook_configuration() -> dict:
    """Two webhooks for the Service, one without a caBundle and one with a stale one (as a chart renders them)."""
    config = mutating_webhook_configuration("https://unused/mutate", "c3RhbGU=")
    first = config["webhooks"][0]
    first["clientConfig"] = {"service": {"name": SERVICE, "namespace": NS, "path": "/mutate", "port": 443}}
    second = {**first, "name": "namespaces.podpatterns.io", "clientConfig": {**first["clientConfig"], "caBundle": "c3RhbGU="}}
    config["webhooks"] = [first, second]
    return config


def replica(tmp_path: Path, name: str, lifetimes: Lifetimes = Lifetimes()) -> CertificateSecret:
    return CertificateSecret(kubeclient.api_client(), Target(NS, SECRET, SERVICE, CONFIG), certs.CertPaths(tmp_path / name),
                             lifetimes)


def stored(api: KubeApi) -> Material:
    secret = api.get(SECRET_PATH)
    assert secret is not None
    return Material.from_data(secret["data"])


def files(manager: CertificateSecret) -> Material:
    paths = manager.paths
    return Material(paths.ca_cert.read_bytes(), b"", paths.cert.read_bytes(), paths.key.read_bytes())


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def in_parallel(*calls):
    """Runs the calls at once; their results, or the first exception re-raised."""
    results, errors = [None] * len(calls), []

    def run(i, call):
        try:
            results[i] = call()
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a replica hung"
    if errors:
        raise errors[0]
    return results


def test_first_start_creates_the_secret_and_trusts_its_ca_in_every_webhook(api, tmp_path, caplog):
    manager = replica(tmp_path, "a")
    with caplog.at_level("INFO", logger="podpatterns"):
        manager.start(timeout=10)

    secret = api.get(SECRET_PATH)
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "podpatterns"}
    assert sorted(secret["data"]) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    material = stored(api)
    ca = x509.load_pem_x509_certificate(material.ca)
    cert = x509.load_pem_x509_certificate(material.cert)
    cert.verify_directly_issued_by(ca)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == NAMES
    assert dt.timedelta(days=364) < cert.not_valid_after_utc - certs.now() <= dt.timedelta(days=365)
    assert ca.not_valid_after_utc - certs.now() > dt.timedelta(days=3649)

    # The serving files are the Secret's (no CA key among them), the key readable by the owner only.
    assert files(manager) == Material(material.ca, b"", material.cert, material.key)
    assert not (tmp_path / "a" / "ca.key").exists()
    assert manager.paths.key.stat().st_mode & 0o777 == 0o600

    # Every webhook trusts the CA: caBundle is exactly the Secret's ca.crt value.
    webhooks = api.get(CONFIG_PATH)["webhooks"]
    assert [w["clientConfig"]["caBundle"] for w in webhooks] == [secret["data"]["ca.crt"]] * 2
    assert [w["clientConfig"]["service"]["name"] for w in webhooks] == [SERVICE] * 2
    [patch] = api.requested("PATCH", CONFIG_PATH)
    assert patch.content_type == "application/json-patch+json"
    assert [op["op"] for op in patch.body] == ["test", "add", "test", "add"]
    assert [(r.method, r.path, r.status) for r in api.requests] == [
        ("GET", SECRET_PATH, 404), ("POST", f"/api/v1/namespaces/{NS}/secrets", 201),
        ("GET", CONFIG_PATH, 200), ("PATCH", CONFIG_PATH, 200)]

    messages = [r.getMessage() for r in caplog.records]
    assert "created a new CA and serving certificate" in messages
    assert "caBundle set in the webhook configuration" in messages
    logged = caplog.text
    assert "PRIVATE KEY" not in logged and secret["data"]["tls.key"] not in logged and secret["data"]["ca.key"] not in logged


def test_a_second_start_reuses_the_secret_and_patches_nothing(api, tmp_path):
    first = replica(tmp_path, "a")
    first.start(timeout=10)
    made = stored(api)
    api.requests.clear()

    second = replica(tmp_path, "b")
    second.start(timeout=10)
    assert stored(api) == made
    assert files(second) == files(first)
    # The cheap path: one read of each object, nothing written.
    assert [(r.method, r.path) for r in api.requests] == [("GET", SECRET_PATH), ("GET", CONFIG_PATH)]


def test_two_replicas_starting_at_once_end_with_one_secret_and_the_same_certificate(api, tmp_path, caplog):
    # Both reads are held until both have arrived, so both see no Secret and both try to create one.
    api.fault("GET", SECRET_PATH, times=2, rendezvous=2)
    a, b = replica(tmp_path, "a"), replica(tmp_path, "b")
    with caplog.at_level("INFO", logger="podpatterns"):
        in_parallel(lambda: a.start(timeout=10), lambda: b.start(timeout=10))

    creates = api.requested("POST", f"/api/v1/namespaces/{NS}/secrets")
    assert sorted(r.status for r in creates) == [201, 409]
    assert [p for p in api.objects if "/secrets/" in p] == [SECRET_PATH]
    assert a.written == b.written == stored(api)
    assert files(a) == files(b)
    assert "another replica changed the Secret first; reading it again" in [r.getMessage() for r in caplog.records]
    assert {w["clientConfig"]["caBundle"] for w in api.get(CONFIG_PATH)["webhooks"]} == {api.get(SECRET_PATH)["data"]["ca.crt"]}


def test_two_replicas_renewing_at_once_keep_the_winners_certificate(api, tmp_path):
    replica(tmp_path, "old", SHORT).start(timeout=10)
    old = stored(api)
    api.requests.clear()
    # Both read the expiring certificate before either writes: one update wins, the other meets a Conflict.
    api.fault("GET", SECRET_PATH, times=2, rendezvous=2)
    b, c = replica(tmp_path, "b"), replica(tmp_path, "c")
    in_parallel(lambda: b.start(timeout=10), lambda: c.start(timeout=10))

    assert sorted(r.status for r in api.requested("PUT", SECRET_PATH)) == [200, 409]
    renewed = stored(api)
    assert renewed.ca == old.ca and renewed.ca_key == old.ca_key
    assert serial(renewed.cert) != serial(old.cert)
    assert b.written == c.written == renewed
    assert len(api.requested("GET", SECRET_PATH)) == 3  # the loser read once more, and kept what it found


def test_a_renewal_by_one_replica_reaches_the_other_at_its_next_check(api, tmp_path, caplog):
    steady = replica(tmp_path, "steady", SHORT)
    steady.start(timeout=10)
    before = files(steady)
    steady.run(interval=0.05)
    try:
        renewing = replica(tmp_path, "renewing")
        with caplog.at_level("INFO", logger="podpatterns"):
            renewing.start(timeout=10)
            deadline = time.monotonic() + 10
            while files(steady) == before and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        steady.stop()
    renewed = stored(api)
    assert serial(renewed.cert) != serial(before.cert)
    assert files(steady) == files(renewing) == Material(renewed.ca, b"", renewed.cert, renewed.key)
    assert renewed.ca == before.ca  # the same CA: nothing to change in the caBundle
    assert len(api.requested("PATCH", CONFIG_PATH)) == 1  # by the first start only
    assert "issued a new serving certificate from the CA in the Secret" in [r.getMessage() for r in caplog.records]


def test_an_expiring_ca_is_rotated_and_both_cas_stay_trusted(api, tmp_path):
    # A CA with 25 days left: fine for its maker (renews 10 days ahead), due for a replica with the defaults.
    maker = replica(tmp_path, "maker", Lifetimes(serving=dt.timedelta(days=20), renew_before=dt.timedelta(days=10),
                                                 ca=dt.timedelta(days=25)))
    maker.start(timeout=10)
    old = stored(api)
    rotating = replica(tmp_path, "rotating")
    rotating.start(timeout=10)

    new = stored(api)
    bundle = x509.load_pem_x509_certificates(new.ca)
    old_ca = x509.load_pem_x509_certificate(old.ca)
    assert len(bundle) == 2 and bundle[1] == old_ca and bundle[0] != old_ca
    x509.load_pem_x509_certificate(new.cert).verify_directly_issued_by(bundle[0])
    # The caBundle holds both: the old replica's certificate verifies until it is replaced, the new one already.
    ca_bundle = base64.b64decode(api.get(CONFIG_PATH)["webhooks"][0]["clientConfig"]["caBundle"])
    trusted = x509.load_pem_x509_certificates(ca_bundle)
    for cert in (old.cert, new.cert):
        issuer = x509.load_pem_x509_certificate(cert).issuer
        assert [c for c in trusted if c.subject == issuer]
    assert maker.check() and files(maker) == files(rotating)


def test_an_empty_secret_made_beforehand_is_filled_keeping_its_type_and_labels(api, tmp_path):
    api.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"labels": {"team": "platform"}}}, SECRET_PATH)
    manager = replica(tmp_path, "a")
    manager.start(timeout=10)
    secret = api.get(SECRET_PATH)
    assert (secret["type"], secret["metadata"]["labels"]) == ("Opaque", {"team": "platform"})
    assert manager.written == stored(api) and stored(api).cert
    assert [r.status for r in api.requested("PUT", SECRET_PATH)] == [200]


def test_a_blanked_ca_bundle_and_a_configuration_made_later_are_set_at_the_next_check(api, tmp_path, caplog):
    del api.objects[CONFIG_PATH]
    manager = replica(tmp_path, "a")
    with caplog.at_level("WARNING", logger="podpatterns"):
        manager.start(timeout=10)  # serving does not wait for the chart's webhook configuration
    assert "the webhook configuration does not exist yet; setting its caBundle at the next check" in caplog.text
    bundle = api.get(SECRET_PATH)["data"]["ca.crt"]

    api.put(webhook_configuration(), CONFIG_PATH)
    assert manager.check()
    assert [w["clientConfig"]["caBundle"] for w in api.get(CONFIG_PATH)["webhooks"]] == [bundle] * 2

    # A `helm upgrade` that renders the configuration without caBundle in the first webhook, and adds one.
    upgraded = webhook_configuration()
    upgraded["webhooks"][1]["clientConfig"]["caBundle"] = bundle
    upgraded["webhooks"].append({**upgraded["webhooks"][0], "name": "third.podpatterns.io"})
    api.put(upgraded, CONFIG_PATH)
    api.requests.clear()
    assert manager.check()
    assert [w["clientConfig"]["caBundle"] for w in api.get(CONFIG_PATH)["webhooks"]] == [bundle] * 3
    [patch] = api.requested("PATCH", CONFIG_PATH)
    assert [op["path"] for op in patch.body] == ["/webhooks/0/name", "/webhooks/0/clientConfig/caBundle",
                                                  "/webhooks/2/name", "/webhooks/2/clientConfig/caBundle"]


def test_api_errors_are_retried_at_start_and_logged_at_checks_without_losing_the_certificate(api, tmp_path, caplog):
    api.fault("GET", SECRET_PATH, times=2, status=503, reason="ServiceUnavailable", message="etcd is away")
    manager = replica(tmp_path, "a")
    with caplog.at_level("WARNING", logger="podpatterns"):
        manager.start(timeout=20)
        retries = [r for r in caplog.records if r.getMessage() == "could not get the serving certificate from the Secret; retrying"]
        assert len(retries) == 2 and retries[0].fields["error"] == "HTTP 503: etcd is away"
        served = files(manager)

        api.fault("GET", SECRET_PATH, status=403, reason="Forbidden", message="secrets is forbidden")
        assert not manager.check()
        assert files(manager) == served
        assert caplog.records[-1].getMessage() == "certificate check failed; retrying at the next check"

        api.fault("PATCH", CONFIG_PATH, status=422, reason="Invalid", message="test failed")
        api.objects[CONFIG_PATH]["webhooks"][0]["clientConfig"].pop("caBundle")
        assert manager.check()  # the certificate is fine; the caBundle waits for the next round
        assert caplog.records[-1].getMessage().startswith("could not set the caBundle")
    assert manager.check()
    assert "caBundle" in api.get(CONFIG_PATH)["webhooks"][0]["clientConfig"]


def test_an_api_that_keeps_failing_ends_the_start_with_a_clear_error(api, tmp_path):
    api.fault("GET", SECRET_PATH, times=1000, status=500, message="boom")
    started = time.monotonic()
    with pytest.raises(StartError, match=rf"no serving certificate from Secret {NS}/{SECRET} within 1 s: HTTP 500: boom"):
        replica(tmp_path, "a").start(timeout=1)
    assert time.monotonic() - started < 5


# --- through the command line

def handshake(port: int, ca: Path, path: str = "/healthz") -> tuple[str, int]:
    """GET `path` as the apiserver would: TLS for the Service's name, verified with `ca`. The status line and
    the served certificate's serial."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=f"{SERVICE}.{NS}.svc") as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {SERVICE}.{NS}.svc\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            der = tls.getpeercert(binary_form=True)
    return answer.split(b"\r\n", 1)[0].decode(), x509.load_der_x509_certificate(der).serial_number


def cluster_env(api: KubeApi, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "POD_NAMESPACE")}
    return {**env, "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}


def self_managed(tmp_path: Path, *extra: str, namespace: bool = True) -> list[str]:
    return ["--cert-secret", SECRET, "--service", SERVICE, *(["--namespace", NS] if namespace else []),
            "--webhook-configuration", CONFIG, "--certs-dir", str(tmp_path / "certs"), "--quiet", *extra]


def test_serve_self_managed_serves_the_secrets_certificate_and_takes_a_renewal_without_a_restart(api, tmp_path):
    # The namespace comes from the downward API's POD_NAMESPACE, as in the chart's Pod.
    server = Server(tmp_path, *self_managed(tmp_path, "--cert-check-seconds", "0.3", namespace=False),
                    env={**cluster_env(api, tmp_path), "POD_NAMESPACE": NS})
    try:
        secret = api.get(SECRET_PATH)
        ca_file = tmp_path / "secret-ca.crt"
        ca_file.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
        status, first = handshake(server.port, ca_file)
        assert status == "HTTP/1.1 200 OK"
        assert first == serial(base64.b64decode(secret["data"]["tls.crt"]))
        assert {w["clientConfig"]["caBundle"] for w in api.get(CONFIG_PATH)["webhooks"]} == {secret["data"]["ca.crt"]}
        assert [r for r in api.requests if r.path.startswith("/version")]  # the same client read the cluster's version

        # Another replica renews: a new serving certificate from the same CA, written to the Secret.
        material = Material.from_data(secret["data"])
        ca_key = serialization.load_pem_private_key(material.ca_key, password=None)
        key, cert = certs.new_serving(ca_key, x509.load_pem_x509_certificate(material.ca), NAMES, [])
        api.put({**secret, "data": {**secret["data"], "tls.crt": base64.b64encode(certs.cert_pem(cert)).decode(),
                                    "tls.key": base64.b64encode(certs.key_pem(key)).decode()}}, SECRET_PATH)
        deadline = time.monotonic() + 15
        while (now := handshake(server.port, ca_file))[1] != cert.serial_number and time.monotonic() < deadline:
            time.sleep(0.1)
        assert now == ("HTTP/1.1 200 OK", cert.serial_number)
        assert server.process.poll() is None
    finally:
        server.stop()
    output = server.output()
    assert "serving certificate reloaded" in output and "PRIVATE KEY" not in output


def test_serve_gives_up_with_a_clear_error_when_the_api_is_unreachable(tmp_path):
    with KubeApi() as api:
        env = cluster_env(api, tmp_path)
    # The stand-in is gone, and its port closed: nothing answers there.
    done = subprocess.run([*podpatterns_command(), "serve", *self_managed(tmp_path, "--cert-start-seconds", "1"),
                           "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"podpatterns serve: no serving certificate from Secret {NS}/{SECRET} within 1 s:" in done.stderr
    assert "could not get the serving certificate from the Secret; retrying" in done.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--tls-cert", "a.crt", "--tls-key", "a.key"], "--cert-secret makes and renews the certificate itself; it excludes --tls-cert and --tls-key"),
    (["--cert-renew-before-days", "400"], "--cert-renew-before-days must be more than 0 and less than --cert-validity-days"),
])
def test_serve_refuses_contradictory_certificate_flags(tmp_path, flags, message):
    done = subprocess.run([*podpatterns_command(), "serve", *self_managed(tmp_path, *flags)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr


def test_serve_needs_a_namespace_from_a_flag_or_the_pod(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "POD_NAMESPACE"}
    if kubeclient.SERVICE_ACCOUNT_NAMESPACE.exists():
        pytest.skip("running in a Pod: the service account names the namespace")
    done = subprocess.run([*podpatterns_command(), "serve", "--cert-secret", SECRET, "--service", SERVICE],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--cert-secret needs --namespace NS (or $POD_NAMESPACE, or to run in a Pod)" in done.stderr
