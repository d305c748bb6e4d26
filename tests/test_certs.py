"""Development certificates of `podpatterns serve`: made once, reused, and reloaded without a restart."""

from __future__ import annotations

import shutil
import ssl
import time

import httpx
from cryptography import x509

from tests.helpers import Server
from webhook import certs


def san_names(path):
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_second_start_reuses_and_a_new_dns_name_reissues_from_the_same_ca(tmp_path):
    first = Server(tmp_path, "--quiet")
    first.stop()
    assert "created a new CA and serving certificate" in first.output()
    ca, cert = (tmp_path / "certs/ca.crt").read_bytes(), (tmp_path / "certs/tls.crt").read_bytes()
    assert san_names(tmp_path / "certs/tls.crt") == ["localhost"]

    second = Server(tmp_path, "--quiet")
    second.stop()
    assert "reused the existing certificates" in second.output()
    assert (tmp_path / "certs/tls.crt").read_bytes() == cert

    third = Server(tmp_path, "--quiet", "--dns-name", "podpatterns.example")
    try:
        assert third.client.get("/healthz").status_code == 200  # the old CA still verifies it
    finally:
        third.stop()
    assert "issued a new serving certificate from the existing CA" in third.output()
    assert (tmp_path / "certs/ca.crt").read_bytes() == ca
    assert san_names(tmp_path / "certs/tls.crt") == ["localhost", "podpatterns.example"]


def test_serve_prints_the_ca_bundle_and_a_ready_webhook_configuration(tmp_path):
    server = Server(tmp_path)
    server.stop()
    out = server.output()
    bundle = certs.ca_bundle(tmp_path / "certs/ca.crt")
    assert f"# caBundle: {bundle}" in out
    assert f"url: https://127.0.0.1:{server.port}/mutate" in out
    for line in ("kind: MutatingWebhookConfiguration", f"caBundle: {bundle}", "sideEffects: None",
                 "reinvocationPolicy: IfNeeded", "- kube-system", "- CREATE"):
        assert line in out


def test_replaced_certificate_files_are_served_without_a_restart(tmp_path):
    server = Server(tmp_path, "--quiet")
    try:
        before = ssl.get_server_certificate(("127.0.0.1", server.port))
        assert before.strip() == (tmp_path / "certs/tls.crt").read_text().strip()
        other = certs.CertPaths(tmp_path / "other")
        certs.generate(other, ["localhost"], ["127.0.0.1"])
        # As a Secret update would: the key, then the certificate, each replaced atomically.
        shutil.copy(other.key, tmp_path / "certs/.tls.key.new")
        (tmp_path / "certs/.tls.key.new").replace(tmp_path / "certs/tls.key")
        shutil.copy(other.cert, tmp_path / "certs/.tls.crt.new")
        (tmp_path / "certs/.tls.crt.new").replace(tmp_path / "certs/tls.crt")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = ssl.get_server_certificate(("127.0.0.1", server.port))
            if now != before:
                break
            time.sleep(0.2)
        assert now.strip() == other.cert.read_text().strip()
        assert server.process.poll() is None
        fresh = ssl.create_default_context(cafile=other.ca_cert)
        assert httpx.get(f"{server.base}/healthz", verify=fresh).status_code == 200
    finally:
        server.stop()
    assert "serving certificate reloaded" in server.output()


def test_a_broken_replacement_keeps_the_current_certificate(tmp_path):
    server = Server(tmp_path, "--quiet")
    try:
        before = ssl.get_server_certificate(("127.0.0.1", server.port))
        (tmp_path / "certs/tls.crt").write_text("not a certificate")
        time.sleep(2.5)
        assert ssl.get_server_certificate(("127.0.0.1", server.port)) == before
    finally:
        server.stop()
    assert "certificate files changed but do not load; keeping the current certificate" in server.output()
