"""Serving-certificate hot reload: watches the certificate files and loads them into the live SSLContext.

New TLS connections use whatever certificate the context holds when they are accepted, so loading a
new chain into the same context switches certificates without a restart or a dropped connection. The load
runs on the server's event loop (`loop`): `load_cert_chain` sets the certificate, then the key, and lets
other threads run in between, so a connection accepted meanwhile would get the new certificate with the
old key and fail its handshake (seen in the test suite as SSLEOFError).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import ssl
import threading
from pathlib import Path

from webhook import certs
from webhook.logs import event
from webhook.server import metrics

MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def harden(context: ssl.SSLContext) -> None:
    """TLS 1.2 or newer, forward-secret AEAD ciphers only (TLS 1.3 suites are all modern)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MODERN_CIPHERS)


def record_expiry(certfile: Path) -> None:
    """Sets podpatterns_certificate_expiry_timestamp_seconds to the expiry of the certificate in `certfile`."""
    try:
        metrics.CERTIFICATE_EXPIRY.set(certs.expiry(certfile.read_bytes()).timestamp())
    except (OSError, ValueError, IndexError) as err:  # the context loaded it, so this is a race with a writer
        event(logging.WARNING, "could not read the serving certificate's expiry", certfile=str(certfile), error=str(err))


class CertificateReloader:
    def __init__(self, context: ssl.SSLContext, certfile: Path, keyfile: Path, interval: float = 1.0):
        self.context, self.certfile, self.keyfile, self.interval = context, certfile, keyfile, interval
        self._seen = self._signature()
        self._stop = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, once it runs (serve.py)
        self.reloads = 0
        # Made right after the server loaded these files into `context` (serve.py): what it serves from the start.
        record_expiry(certfile)

    def _signature(self) -> tuple:
        # stat() follows symlinks, so the kubelet's swap of a mounted Secret's ..data link counts as a change.
        try:
            return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in map(os.stat, (self.certfile, self.keyfile)))
        except OSError:
            return ()

    def check(self) -> bool:
        """Loads the files if they changed and form a valid pair; True when the live context changed."""
        signature = self._signature()
        if not signature or signature == self._seen:
            return False
        try:
            # Tried on a scratch context first: a failed load must leave the live one serving.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.certfile, self.keyfile)
            self.context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as err:
            event(logging.WARNING, "certificate files changed but do not load; keeping the current certificate",
                  certfile=str(self.certfile), error=str(err))
            return False
        self._seen = signature
        self.reloads += 1
        record_expiry(self.certfile)
        event(logging.INFO, "serving certificate reloaded", certfile=str(self.certfile))
        return True

    def start(self) -> None:
        threading.Thread(target=self._run, name="certificate-reloader", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            loop = self.loop
            if loop is None:
                self.check()
                continue
            try:
                asyncio.run_coroutine_threadsafe(self._check_on_loop(), loop).result(timeout=30)
            except (RuntimeError, TimeoutError, concurrent.futures.TimeoutError):
                pass  # the loop is closing, or busy past the timeout: the next round tries again

    async def _check_on_loop(self) -> bool:
        return self.check()
