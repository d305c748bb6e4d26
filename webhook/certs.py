"""Certificates: a CA and an ECDSA serving certificate signed by it, made and checked with `cryptography`."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertPaths:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "podpatterns"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_ca(
    common_name: str = "podpatterns development CA", validity: dt.timedelta = CA_VALIDITY,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_serving(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, dns_names: list[str], ip_addresses: list[str],
    validity: dt.timedelta = SERVING_VALIDITY,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Never valid longer than its CA: a certificate that outlives its issuer fails verification anyway."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = now()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0] if dns_names else ip_addresses[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(min(start + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def service_dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Readers (the reload watcher, a second replica) see the old file or the new one, never half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate(paths: CertPaths, dns_names: list[str], ip_addresses: list[str]) -> None:
    """A new CA and serving certificate in `paths.directory`."""
    paths.directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = new_ca()
    write_atomically(paths.ca_key, key_pem(ca_key), 0o600)
    write_atomically(paths.ca_cert, cert_pem(ca_cert))
    _issue(paths, ca_key, ca_cert, dns_names, ip_addresses)


def _issue(paths: CertPaths, ca_key, ca_cert, dns_names: list[str], ip_addresses: list[str]) -> None:
    key, cert = new_serving(ca_key, ca_cert, dns_names, ip_addresses)
    write_serving(paths, key_pem(key), cert_pem(cert))


def write_serving(paths: CertPaths, key: bytes, cert: bytes) -> None:
    # The key first: a watcher that sees the new certificate must find its key already there.
    write_atomically(paths.key, key, 0o600)
    write_atomically(paths.cert, cert)


def ensure(paths: CertPaths, dns_names: list[str], ip_addresses: list[str]) -> str:
    """Reuses valid certificates; reissues the serving certificate from the same CA when it is missing,
    expiring or lacks a name; makes a new CA only when there is no usable one. Says what it did."""
    ca = _load_ca(paths)
    if ca is None:
        generate(paths, dns_names, ip_addresses)
        return "created a new CA and serving certificate"
    ca_key, ca_cert = ca
    if _serving_ok(paths, ca_cert, dns_names, ip_addresses):
        return "reused the existing certificates"
    _issue(paths, ca_key, ca_cert, dns_names, ip_addresses)
    return "issued a new serving certificate from the existing CA"


def _load_ca(paths: CertPaths):
    try:
        return signing_ca(paths.ca_cert.read_bytes(), paths.ca_key.read_bytes(), RENEW_BEFORE, now())
    except OSError:
        return None


def _serving_ok(paths: CertPaths, ca_cert: x509.Certificate, dns_names: list[str], ip_addresses: list[str]) -> bool:
    try:
        cert_pem, key_pem = paths.cert.read_bytes(), paths.key.read_bytes()
    except OSError:
        return False
    return serving_ok(cert_pem, key_pem, ca_cert, dns_names, ip_addresses, RENEW_BEFORE, now())


def signing_ca(
    ca_pem: bytes, key_pem: bytes, renew_before: dt.timedelta, now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    """The certificate in `ca_pem` (which may hold several) that `key_pem` belongs to, unless it is due
    for renewal; None when there is no such usable pair."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        found = [c for c in x509.load_pem_x509_certificates(ca_pem) if c.public_key() == key.public_key()]
    except (ValueError, TypeError):
        return None
    if not found or not isinstance(key, ec.EllipticCurvePrivateKey) or found[0].not_valid_after_utc - now < renew_before:
        return None
    return key, found[0]


def serving_ok(
    cert_pem: bytes, key_pem: bytes, ca_cert: x509.Certificate, dns_names: list[str], ip_addresses: list[str],
    renew_before: dt.timedelta, now: dt.datetime,
) -> bool:
    """A matching pair, issued by `ca_cert`, naming every name and address, and not due for renewal."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, x509.InvalidSignature):
        return False
    have_dns = set(sans.get_values_for_type(x509.DNSName))
    have_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return (
        key.public_key() == cert.public_key()
        and cert.not_valid_after_utc - now > renew_before
        and set(dns_names) <= have_dns
        and {str(ipaddress.ip_address(ip)) for ip in ip_addresses} <= have_ips
    )


def ca_bundle(ca_cert_path: Path) -> str:
    """The base64 of the CA's PEM, as a webhook configuration's caBundle wants it."""
    return base64.b64encode(ca_cert_path.read_bytes()).decode()


def expiry(cert_pem: bytes) -> dt.datetime:
    """When the first certificate of `cert_pem` (a serving certificate, then its chain) expires."""
    return x509.load_pem_x509_certificates(cert_pem)[0].not_valid_after_utc


def chain_problems(chain_pem: bytes, ca_pem: bytes, dns_name: str, at: dt.datetime) -> list[str]:
    """Why a TLS client that trusts the CAs of `ca_pem` (a caBundle) and dials `dns_name` would refuse the
    serving certificate `chain_pem` (the leaf, then any intermediates), checked as Go's crypto/x509 (the
    apiserver) checks it: a chain up to a CA of the bundle, every certificate of it valid at `at`, the name
    among the leaf's DNS SANs (the Common Name is ignored), an extended key usage that allows serving. Empty
    when it would accept it."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        return ["the serving certificate is not a PEM certificate"]
    try:
        roots = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        return ["the caBundle holds no PEM certificate"]
    leaf, intermediates = chain[0], chain[1:]
    problems: list[str] = []
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not any(_name_matches(name, dns_name) for name in names):
        problems.append(f"it is not valid for {dns_name}: it names {', '.join(names) or 'no DNS name'}")
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
            problems.append("its extended key usage does not allow serving TLS (no serverAuth)")
    except x509.ExtensionNotFound:
        pass
    path, current = [leaf], leaf
    while True:
        root = next((r for r in roots if _issued_by(current, r)), None)
        if root is not None:
            path.append(root)
            break
        issuer = next((c for c in intermediates if c not in path and _issued_by(current, c)), None)
        if issuer is None:
            problems.append(f"{_subject(current)} is not signed by a CA of the caBundle "
                            f"({'; '.join(_subject(r) for r in roots) or 'empty'})")
            break
        path.append(issuer)
        current = issuer
    for cert in path:
        if at < cert.not_valid_before_utc:
            problems.append(f"{_subject(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        elif at > cert.not_valid_after_utc:
            problems.append(f"{_subject(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return problems


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _name_matches(pattern: str, name: str) -> bool:
    """A SAN DNS name against the name dialled: exact, or a wildcard standing for the whole leftmost label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def _subject(cert: x509.Certificate) -> str:
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"certificate {common[0].value!r}" if common else f"certificate {cert.subject.rfc4514_string()!r}"
