"""The HTTP edge: POST /mutate and POST /validate as raw ASGI handlers, and FastAPI for /healthz, /readyz and /metrics.

/mutate is dispatched before FastAPI ever sees it: measured with bench/ (see README, "Performance"),
FastAPI's routing and request/response machinery cost more per request than uvicorn, TLS and HTTP
together, for nothing the endpoint needs. The engine's own orjson answer is already the response body.

A review whose Namespace is not in the cache waits for the cache's lookup (a worker thread) without
blocking the event loop, at most the lookup timeout; then it is decided with what was read, or refused
with the reason: denied (`--unsynced-namespaces fail`), or an HTTP 503 whose body is a Kubernetes Status
the apiserver shows, so the webhook's failurePolicy decides (`skip`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import orjson
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from webhook.core.configuration import Configuration, ConfigurationHolder
from webhook.core.namespaces import (
    Namespaces,
    NamespaceUnavailable,
    NotCached,
    RefusedNamespaces,
    StaticNamespaces,
)
from webhook.logs import event
from webhook.server import admission, validation
from webhook.server.metrics import (
    BY_OUTCOME,
    LATENCY,
    NAMESPACE_LOOKUPS,
    count_injection,
)

DEFAULT_MAX_BODY = 3 * 1024 * 1024  # the apiserver's own limit on a request body
JSON = "application/json"
CONTENT_TYPE = (b"content-type", JSON.encode())
CLOSE = (b"connection", b"close")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


# What a review whose Namespace cannot be read gets (--unsynced-namespaces): fail, a denial with the reason;
# skip, an HTTP 503 with the reason, so the webhook's failurePolicy decides.
UNREADABLE_MODES = ("fail", "skip")


class Deferred(Exception):
    """The Namespace could not be read and the webhook's failurePolicy is to decide: an HTTP 503 with the reason."""


class Webhook:
    """The ASGI application: POST /mutate and /validate straight to the admission code, everything else to FastAPI."""

    def __init__(self, holder: ConfigurationHolder, max_body_bytes: int = DEFAULT_MAX_BODY,
                 namespaces: Namespaces | None = None, ready: Callable[[], bool] | None = None,
                 unreadable: str = "fail", catalogue_dirs: Iterable[str | Path] = ()):
        """`ready`, when given, is asked by every GET /readyz (e.g. whether the Namespace cache has synced).
        `unreadable`: what a review whose Namespace could not be read gets: `fail` a denial with the reason,
        `skip` an HTTP 503 with the reason (the failurePolicy decides). `catalogue_dirs`: the --catalog
        directories, which /validate reads to know what serves an entry once its PatternTemplate is deleted."""
        if unreadable not in UNREADABLE_MODES:
            raise ValueError(f"unreadable must be one of {', '.join(UNREADABLE_MODES)}, not {unreadable!r}")
        self.holder = holder
        self.max_body_bytes = max_body_bytes
        self.namespaces = namespaces
        self.unreadable = unreadable
        self.catalogue_dirs = [str(d) for d in catalogue_dirs]
        self.draining = False
        self.api = _health_and_metrics(lambda: not self.draining and (ready is None or ready()))

    def drain(self) -> None:
        """From now on /readyz answers 503 and every /mutate answer closes its connection (see shutdown.py)."""
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mutate" and scope["method"] == "POST":
            await self.mutate(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/validate" and scope["method"] == "POST":
            await self.validate(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    async def mutate(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = b""
        try:
            body = await _read_body(scope, receive, self.max_body_bytes)
            configuration = self.holder.current  # one configuration for both tries
            try:
                answer = admission.review(body, configuration, self.namespaces)
            except NotCached as miss:
                answer = await self.looked_up(body, configuration, miss)
        except Deferred as err:
            # Answered like an outage, so the webhook configuration's failurePolicy decides; the body is a
            # Status, whose message the apiserver shows instead of its generic "unable to handle the request".
            return await self.refuse(send, 503, str(err), "unavailable", body, status_body=True)
        except BodyTooLarge:
            # The connection is closed rather than drained of the rest of the body.
            return await self.refuse(send, 413, f"request body is larger than {self.max_body_bytes} bytes",
                                     "invalid", body, close=True)
        except admission.BadReview as err:
            return await self.refuse(send, 400, str(err), "invalid", body)
        BY_OUTCOME[answer.outcome].inc()
        if answer.injected:
            count_injection(answer.injected)
        LATENCY.observe(time.perf_counter() - started)
        await _send(send, 200, answer.body, self.draining)

    async def validate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A PatternTemplate change (webhook/server/validation.py). Not counted with the Pods' reviews in /metrics:
        its denials are a platform team's kubectl errors, not Pods refused."""
        body = b""
        try:
            body = await _read_body(scope, receive, self.max_body_bytes)
            # Loading an entry takes tens of milliseconds: off the event loop, so /mutate answers meanwhile.
            answer = await asyncio.to_thread(validation.review, body, self.holder.current, self.catalogue_dirs)
        except BodyTooLarge:
            return await self._reject(send, 413, f"request body is larger than {self.max_body_bytes} bytes", body, close=True)
        except admission.BadReview as err:
            return await self._reject(send, 400, str(err), body)
        await _send(send, 200, answer, self.draining)

    async def _reject(self, send: Send, status: int, message: str, body: bytes, close: bool = False) -> None:
        event(logging.WARNING, "refused", path="/validate", status=status, reason=message, uid=_uid_in(body))
        await _send(send, status, _error(status, message), close or self.draining)

    async def looked_up(self, body: bytes, configuration: Configuration, miss: NotCached) -> admission.Answer:
        """The review decided with its Namespace as the lookup read it; or, when the lookup fails or outlasts
        its timeout, refused with the reason (a denial, or Deferred). Never decided without the Namespace."""
        waiting = asyncio.wrap_future(miss.pending)  # shared with other reviews: never cancelled here
        done, _ = await asyncio.wait((waiting,), timeout=miss.timeout)
        if not done:
            waiting.add_done_callback(_retrieved)
            failure, result = NamespaceUnavailable(miss.name, f"timeout after {miss.timeout:g} s",
                                                   synced=miss.synced), "timeout"
        elif waiting.cancelled():
            failure, result = NamespaceUnavailable(miss.name, "lookup cancelled, the server is stopping",
                                                   synced=miss.synced), "error"
        elif isinstance(waiting.exception(), NamespaceUnavailable):
            failure = waiting.exception()
            result = "not_found" if failure.code == 404 else "error"
        elif waiting.exception() is not None:  # a bug: refused all the same
            failure, result = NamespaceUnavailable(miss.name, type(waiting.exception()).__name__,
                                                   synced=miss.synced), "error"
        else:
            NAMESPACE_LOOKUPS["found"].inc()
            return admission.review(body, configuration, StaticNamespaces([waiting.result()]))
        NAMESPACE_LOOKUPS[result].inc()
        if self.unreadable == "skip" and failure.code == 503:
            raise Deferred(failure.deferred_message)
        return admission.review(body, configuration, RefusedNamespaces(failure))

    async def refuse(self, send: Send, status: int, message: str, outcome: str, body: bytes,
                     close: bool = False, status_body: bool = False) -> None:
        """An HTTP error with a JSON body (also a Kubernetes Status when `status_body`), counted, and logged as
        one line with the uid when the body has one."""
        BY_OUTCOME[outcome].inc()
        event(logging.WARNING, "refused", status=status, reason=message, uid=_uid_in(body))
        await _send(send, status, _error(status, message, status_body), close or self.draining)


def create_app(holder: ConfigurationHolder, max_body_bytes: int = DEFAULT_MAX_BODY,
               namespaces: Namespaces | None = None, ready: Callable[[], bool] | None = None,
               unreadable: str = "fail", catalogue_dirs: Iterable[str | Path] = ()) -> Webhook:
    return Webhook(holder, max_body_bytes, namespaces, ready, unreadable, catalogue_dirs)


def _health_and_metrics(ready: Callable[[], bool]) -> FastAPI:
    api = FastAPI(title="podpatterns", openapi_url=None, docs_url=None, redoc_url=None)

    @api.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @api.get("/readyz")
    async def readyz() -> Response:
        if ready():
            return Response(b'{"status":"ready"}', media_type=JSON)
        return Response(b'{"status":"not ready"}', status_code=503, media_type=JSON)

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return api


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge  # refused before a byte of the body is read
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise admission.BadReview("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, close: bool = False) -> None:
    # With a Content-Length uvicorn writes the body as it is; without, it copies it into chunked framing.
    headers = [CONTENT_TYPE, (b"content-length", b"%d" % len(body))]
    if close:
        headers.append(CLOSE)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _uid_in(body: bytes) -> str | None:
    """The request uid of a body that was refused, if it has one (error path only: it decodes again)."""
    try:
        request = orjson.loads(body).get("request")
        uid = request.get("uid") if isinstance(request, dict) else None
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return uid if isinstance(uid, str) else None


def _retrieved(waiting: asyncio.Future[Any]) -> None:
    """Marks the outcome of a lookup nobody waits for any more as seen (asyncio logs an unseen exception)."""
    if not waiting.cancelled():
        waiting.exception()


STATUS_REASONS = {503: "ServiceUnavailable"}


def _error(status: int, message: str, status_body: bool = False) -> bytes:
    if not status_body:
        return orjson.dumps({"error": message, "code": status})
    # The apiserver's client reads a Status with status Failure from an error answer, and shows its message
    # ("failed calling webhook …: failed to call webhook: MESSAGE"); `error` keeps the shape of the other errors.
    return orjson.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                         "reason": STATUS_REASONS.get(status, "InternalError"), "code": status, "error": message})
