"""The certificate a release's webhook serves: read from its TLS Secret, or from the endpoint over TLS."""

from __future__ import annotations

import base64
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

from webhook.cluster import kubeclient

DEFAULT_SUFFIX = "-tls"  # the chart's Secret in selfManaged and certManager modes: <fullname>-tls


def secret_name(deployment: dict[str, Any] | None, fullname: str) -> str:
    """The Secret the release's server serves from: `serve --cert-secret NAME` (selfManaged), else the Secret of the
    Pod's `tls` volume (certManager, existingSecret), else the chart's default name."""
    spec = ((deployment or {}).get("spec") or {}).get("template", {}).get("spec") or {}
    for container in spec.get("containers") or []:
        for arg in container.get("args") or []:
            if isinstance(arg, str) and arg.startswith("--cert-secret="):
                return arg.split("=", 1)[1]
    for volume in spec.get("volumes") or []:
        if volume.get("name") == "tls" and (volume.get("secret") or {}).get("secretName"):
            return volume["secret"]["secretName"]
    return fullname + DEFAULT_SUFFIX


def read_secret_certificate(api: Any, namespace: str, name: str) -> bytes:
    """The PEM in the Secret's tls.crt (b"" when it has none). Raises the client's ApiException (404: no Secret)."""
    from kubernetes import client

    response = client.CoreV1Api(api).read_namespaced_secret(name, namespace, _preload_content=False,
                                                             _request_timeout=kubeclient.TIMEOUT)
    data = json.loads(response.data).get("data") or {}
    try:
        return base64.b64decode(data.get("tls.crt", ""), validate=True)
    except ValueError:
        return b""


def served(url: str, server_name: str, ca_pem: bytes, timeout: float = 5.0) -> tuple[bytes, str | None]:
    """Connects to `url` (https://HOST:PORT/…) twice, sending `server_name` as SNI: once trusting nothing, for the
    certificate it serves (PEM), once as the apiserver does, trusting only `ca_pem` and checking the certificate is
    valid for `server_name`. Returns the certificate and why the second handshake failed (None when it passed).
    Raises OSError when the endpoint cannot be reached."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"--webhook-url must be https://HOST[:PORT], got {url!r}")
    address = (parts.hostname, parts.port or 443)
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with socket.create_connection(address, timeout=timeout) as raw, \
            unverified.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True) or b""
    pem = ssl.DER_cert_to_PEM_cert(der).encode() if der else b""
    try:
        verifying = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
        with socket.create_connection(address, timeout=timeout) as raw, \
                verifying.wrap_socket(raw, server_hostname=server_name):
            pass
    except ssl.SSLCertVerificationError as err:
        return pem, err.verify_message or str(err)
    except ssl.SSLError as err:
        return pem, str(err)
    return pem, None
