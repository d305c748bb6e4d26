"""podpatterns_certificate_expiry_timestamp_seconds: the expiry of the certificate being served, at start and after a
reload; and certs.chain_problems, which `podpatterns check` judges a caBundle with."""

from __future__ import annotations

import datetime as dt
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Server
from webhook import certs
from webhook.server import metrics
from webhook.server.tlsreload import CertificateReloader

METRIC = "podpatterns_certificate_expiry_timestamp_seconds"


def _value(text: str) -> float:
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == METRIC)


def test_a_running_server_exports_the_expiry_of_the_certificate_it_serves(tmp_path):
    server = Server(tmp_path, "--quiet")
    try:
        served = certs.expiry((tmp_path / "certs" / "tls.crt").read_bytes())
        assert _value(server.client.get("/metrics").text) == served.timestamp()
    finally:
        server.stop()


def test_a_reloaded_certificate_moves_the_gauge(tmp_path):
    paths = certs.CertPaths(tmp_path)
    certs.generate(paths, ["localhost"], [])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(paths.cert, paths.key)
    reloader = CertificateReloader(context, paths.cert, paths.key)
    assert metrics.CERTIFICATE_EXPIRY._value.get() == certs.expiry(paths.cert.read_bytes()).timestamp()
    ca_key, ca_cert = certs.new_ca()
    key, cert = certs.new_serving(ca_key, ca_cert, ["localhost"], [], dt.timedelta(days=7))
    certs.write_serving(paths, certs.key_pem(key), certs.cert_pem(cert))
    assert reloader.check()
    assert metrics.CERTIFICATE_EXPIRY._value.get() == cert.not_valid_after_utc.timestamp()


def test_chain_problems_are_what_a_verifying_client_would_refuse():
    ca_key, ca = certs.new_ca("corp root")
    _, cert = certs.new_serving(ca_key, ca, ["web.shop.svc", "*.pods.shop.svc"], [])
    now = certs.now()
    leaf, bundle = certs.cert_pem(cert), certs.cert_pem(ca)
    assert certs.chain_problems(leaf, bundle, "web.shop.svc", now) == []
    assert certs.chain_problems(leaf, bundle, "a.pods.shop.svc", now) == []  # a wildcard stands for one label
    assert certs.chain_problems(leaf, bundle, "a.b.pods.shop.svc", now) != []
    assert certs.chain_problems(leaf, bundle, "other.shop.svc", now) == [
        "it is not valid for other.shop.svc: it names web.shop.svc, *.pods.shop.svc"]
    _, other = certs.new_ca("other root")
    assert certs.chain_problems(leaf, certs.cert_pem(other), "web.shop.svc", now) == [
        "certificate 'web.shop.svc' is not signed by a CA of the caBundle (certificate 'other root')"]
    # A bundle of several CAs (a CA rotation's overlap) verifies a certificate of either.
    assert certs.chain_problems(leaf, certs.cert_pem(other) + bundle, "web.shop.svc", now) == []
    later = cert.not_valid_after_utc + dt.timedelta(days=1)
    assert certs.chain_problems(leaf, bundle, "web.shop.svc", later) == [
        f"certificate 'web.shop.svc' expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"]
    # Through an intermediate the serving file carries after the leaf, to the root in the bundle.
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp issuing")]))
             .issuer_name(ca.subject).public_key(inter_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(ca_key, hashes.SHA256()))
    _, issued = certs.new_serving(inter_key, inter, ["web.shop.svc"], [])
    assert certs.chain_problems(certs.cert_pem(issued) + certs.cert_pem(inter), bundle, "web.shop.svc", now) == []
    assert certs.chain_problems(certs.cert_pem(issued), bundle, "web.shop.svc", now) == [
        "certificate 'web.shop.svc' is not signed by a CA of the caBundle (certificate 'corp root')"]
    assert certs.chain_problems(b"not a certificate", bundle, "web.shop.svc", now) == [
        "the serving certificate is not a PEM certificate"]
    assert certs.chain_problems(leaf, b"", "web.shop.svc", now) == ["the caBundle holds no PEM certificate"]
