"""The certificate Secret shared by all replicas: made by whichever replica starts first, renewed before
expiry, copied into every replica's serving files, and trusted by the webhook configuration's caBundle.

Replicas never coordinate other than through the Secret: a create that finds it already made
(409 AlreadyExists) or an update that finds it changed since it was read (409 Conflict, the
resourceVersion precondition) means another replica got there first, so the loser reads and uses
what the winner wrote.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from webhook import certs
from webhook.cluster import kubeclient
from webhook.logs import event

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# kubernetes.io/tls: tools recognise it as a serving certificate, and the API insists on tls.crt and
# tls.key. ca.crt is the conventional extra key (cert-manager writes it too); ca.key is ours.
SECRET_TYPE = "kubernetes.io/tls"
CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"
MANAGED_BY = {"app.kubernetes.io/managed-by": "podpatterns"}
ATTEMPTS = 3  # reads of the Secret in one round; each write lost to another replica costs one
JSON_PATCH = "application/json-patch+json"


class StartError(Exception):
    """No serving certificate could be had from the Secret in the time allowed."""


@dataclass(frozen=True)
class Lifetimes:
    serving: dt.timedelta = certs.SERVING_VALIDITY
    renew_before: dt.timedelta = certs.RENEW_BEFORE  # of the serving certificate and of the CA
    ca: dt.timedelta = certs.CA_VALIDITY


@dataclass(frozen=True)
class Target:
    """Which Secret, for which Service, trusted by which MutatingWebhookConfiguration and
    ValidatingWebhookConfiguration (if any)."""

    namespace: str
    secret: str
    service: str
    webhook_configuration: str | None = None
    extra_dns_names: tuple[str, ...] = ()
    validating_webhook_configuration: str | None = None

    @property
    def dns_names(self) -> list[str]:
        return certs.service_dns_names(self.service, self.namespace) + list(self.extra_dns_names)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.secret}"


@dataclass(frozen=True)
class Material:
    """The Secret's data as PEM. `ca` holds the signing CA, then, after a CA rotation, the previous CA
    until it expires: it is the caBundle, so serving certificates of either CA verify during the overlap."""

    ca: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    @classmethod
    def from_data(cls, data: dict[str, str] | None) -> Material:
        def pem(name: str) -> bytes:
            try:
                return base64.b64decode((data or {}).get(name, ""), validate=True)
            except ValueError:  # garbage is as good as missing: it gets replaced
                return b""

        return cls(pem(CA_CERT), pem(CA_KEY), pem(TLS_CERT), pem(TLS_KEY))

    def data(self) -> dict[str, str]:
        pems = {CA_CERT: self.ca, CA_KEY: self.ca_key, TLS_CERT: self.cert, TLS_KEY: self.key}
        return {name: base64.b64encode(pem).decode() for name, pem in pems.items()}

    @property
    def ca_bundle(self) -> str:
        """Equal to the Secret's data["ca.crt"], so a chart can copy that value too."""
        return base64.b64encode(self.ca).decode()

    def expiry(self) -> str:
        try:
            return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc.isoformat()
        except ValueError:
            return "unknown"


def renewal(current: Material | None, target: Target, lifetimes: Lifetimes, now: dt.datetime) -> tuple[Material, str] | None:
    """What the Secret should hold instead of `current` and why, or None when `current` serves."""
    ca = certs.signing_ca(current.ca, current.ca_key, lifetimes.renew_before, now) if current else None
    if ca is not None:
        if certs.serving_ok(current.cert, current.key, ca[1], target.dns_names, [], lifetimes.renew_before, now):
            return None
        return _issued(*ca, _valid_cas(current.ca, now), target, lifetimes), "issued a new serving certificate from the CA in the Secret"
    retiring = _valid_cas(current.ca, now) if current else []
    ca_key, ca_cert = certs.new_ca(f"podpatterns CA for {target.label}", lifetimes.ca)
    why = "rotated the CA; the previous one stays trusted until it expires" if retiring else "created a new CA and serving certificate"
    return _issued(ca_key, ca_cert, retiring, target, lifetimes), why


def _valid_cas(pem: bytes, now: dt.datetime) -> list[x509.Certificate]:
    try:
        return [c for c in x509.load_pem_x509_certificates(pem) if c.not_valid_after_utc > now]
    except ValueError:
        return []


def _issued(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, trusted: list[x509.Certificate], target: Target,
            lifetimes: Lifetimes) -> Material:
    key, cert = certs.new_serving(ca_key, ca_cert, target.dns_names, [], lifetimes.serving)
    bundle = [ca_cert] + [c for c in trusted if c != ca_cert]
    return Material(b"".join(map(certs.cert_pem, bundle)), certs.key_pem(ca_key), certs.cert_pem(cert), certs.key_pem(key))


def describe(err: BaseException) -> str:
    """An error in one line, without response bodies or headers (a Status message at most)."""
    from kubernetes.client import ApiException

    if isinstance(err, ApiException):
        try:
            message = json.loads(err.body or "")["message"]
        except (ValueError, KeyError, TypeError):
            message = err.reason
        return f"HTTP {err.status}: {message}"
    return f"{type(err).__name__}: {err}"


class CertificateSecret:
    """`start()` once, then `run(interval)` in the background; `check()` is one round, errors logged."""

    def __init__(self, api: ApiClient, target: Target, paths: certs.CertPaths, lifetimes: Lifetimes = Lifetimes()):
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.target, self.paths, self.lifetimes = target, paths, lifetimes
        self.written: Material | None = None
        self._stop = threading.Event()

    def sync(self) -> Material:
        """One round: the Secret settled, the caBundle asserted, the serving files up to date. Raises when
        there is no certificate; a caBundle that cannot be set is logged and left to the next round."""
        material = self._settle()
        try:
            self._trust(material)
        except Exception as err:
            event(logging.ERROR, "could not set the caBundle of the webhook configuration; retrying at the next check",
                  webhook_configuration=self.target.webhook_configuration, error=describe(err))
        self._write(material)
        return material

    def start(self, timeout: float) -> None:
        """Returns once the serving files hold a certificate; raises StartError after `timeout` seconds."""
        deadline, pause = time.monotonic() + timeout, 0.5
        while True:
            try:
                self.sync()
                return
            except Exception as err:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StartError(f"no serving certificate from Secret {self.target.label} within {timeout:g} s: "
                                     f"{describe(err)}") from err
                event(logging.WARNING, "could not get the serving certificate from the Secret; retrying",
                      secret=self.target.label, error=describe(err), retry_in_seconds=round(min(pause, left), 2))
                if self._stop.wait(min(pause, left)):
                    raise StartError("stopped before a serving certificate was had") from err
                pause = min(pause * 2, 10.0)

    def check(self) -> bool:
        try:
            self.sync()
        except Exception as err:  # the server keeps its current certificate and tries again next time
            event(logging.WARNING, "certificate check failed; retrying at the next check",
                  secret=self.target.label, error=describe(err))
            return False
        return True

    def run(self, interval: float) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.check()

        thread = threading.Thread(target=loop, name="certificate-secret", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    # --- the Secret

    def _settle(self) -> Material:
        for _ in range(ATTEMPTS):
            secret = self._read_secret()
            current = Material.from_data(secret.get("data")) if secret is not None else None
            change = renewal(current, self.target, self.lifetimes, certs.now())
            if change is None:
                assert current is not None
                return current
            wanted, why = change
            if self._write_secret(secret, wanted):
                event(logging.INFO, why, secret=self.target.label, expires=wanted.expiry())
                return wanted
            event(logging.INFO, "another replica changed the Secret first; reading it again", secret=self.target.label)
        raise RuntimeError(f"Secret {self.target.label} changed under every one of {ATTEMPTS} attempts")

    def _read_secret(self) -> dict[str, Any] | None:
        from kubernetes.client import ApiException

        try:
            response = self.core.read_namespaced_secret(self.target.secret, self.target.namespace,
                                                        _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return json.loads(response.data)

    def _write_secret(self, secret: dict[str, Any] | None, material: Material) -> bool:
        """Creates the Secret, or replaces the one read (its resourceVersion is the precondition); False when
        another replica wrote first."""
        from kubernetes.client import ApiException

        try:
            if secret is None:
                body = {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE, "data": material.data(),
                        "metadata": {"name": self.target.secret, "namespace": self.target.namespace, "labels": MANAGED_BY}}
                self.core.create_namespaced_secret(self.target.namespace, body, _preload_content=False,
                                                   _request_timeout=kubeclient.TIMEOUT)
            else:
                # Whatever else is in it (labels, type, other keys) stays as it was.
                body = {**secret, "data": {**(secret.get("data") or {}), **material.data()}}
                self.core.replace_namespaced_secret(self.target.secret, self.target.namespace, body,
                                                    _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        return True

    # --- the webhook configuration and the files

    def _trust(self, material: Material) -> None:
        self._trust_one(material, self.target.webhook_configuration, self.admission.read_mutating_webhook_configuration,
                        self.admission.patch_mutating_webhook_configuration)
        self._trust_one(material, self.target.validating_webhook_configuration,
                        self.admission.read_validating_webhook_configuration,
                        self.admission.patch_validating_webhook_configuration)

    def _trust_one(self, material: Material, name: str | None, read: Any, patch: Any) -> None:
        from kubernetes.client import ApiException

        if not name:
            return
        try:
            response = read(name, _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise
            # The chart may create it after the Deployment.
            event(logging.WARNING, "the webhook configuration does not exist yet; setting its caBundle at the next check",
                  webhook_configuration=name)
            return
        bundle, ops, names = material.ca_bundle, [], []
        for i, webhook in enumerate(json.loads(response.data).get("webhooks") or []):
            if (webhook.get("clientConfig") or {}).get("caBundle") != bundle:
                # The test fails the whole patch, instead of touching another webhook, if the list was
                # reordered since the read; the next check reads it again.
                ops += [{"op": "test", "path": f"/webhooks/{i}/name", "value": webhook["name"]},
                        {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}]
                names.append(webhook["name"])
        if ops:
            patch(name, ops, _content_type=JSON_PATCH, _preload_content=False, _request_timeout=kubeclient.TIMEOUT)
            event(logging.INFO, "caBundle set in the webhook configuration", webhook_configuration=name, webhooks=names)

    def _write(self, material: Material) -> None:
        if material == self.written:
            return
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        certs.write_atomically(self.paths.ca_cert, material.ca)
        certs.write_serving(self.paths, material.key, material.cert)
        self.written = material
        event(logging.INFO, "serving certificate files written", directory=str(self.paths.directory),
              expires=material.expiry())
