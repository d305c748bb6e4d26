"""The HTTP edge: POST /mutate as a raw ASGI handler, and FastAPI for /healthz, /readyz and /metrics.

/mutate is dispatched before FastAPI ever sees it: measured with bench/ (see README, "Performance"),
FastAPI's routing and request/response machinery cost more per request than uvicorn, TLS and HTTP
together, for nothing the endpoint needs. The engine's own orjson answer is already the response body.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

import orjson
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from webhook.core.configuration import ConfigurationHolder
from webhook.core.namespaces import Namespaces, NotSynced
from webhook.logs import event
from webhook.server import admission
from webhook.server.metrics import BY_OUTCOME, LATENCY, count_injection

DEFAULT_MAX_BODY = 3 * 1024 * 1024  # the apiserver's own limit on a request body
JSON = "application/json"
CONTENT_TYPE = (b"content-type", JSON.encode())
CLOSE = (b"connection", b"close")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


class Webhook:
    """The ASGI application: POST /mutate straight to the admission code, everything else to FastAPI."""

    def __init__(self, holder: ConfigurationHolder, max_body_bytes: int = DEFAULT_MAX_BODY,
                 namespaces: Namespaces | None = None, ready: Callable[[], bool] | None = None):
        """`ready`, when given, is asked by every GET /readyz (e.g. whether the Namespace cache has synced)."""
        self.holder = holder
        self.max_body_bytes = max_body_bytes
        self.namespaces = namespaces
        self.draining = False
        self.api = _health_and_metrics(lambda: not self.draining and (ready is None or ready()))

    def drain(self) -> None:
        """From now on /readyz answers 503 and every /mutate answer closes its connection (see shutdown.py)."""
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mutate" and scope["method"] == "POST":
            await self.mutate(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    async def mutate(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = b""
        try:
            body = await _read_body(scope, receive, self.max_body_bytes)
            answer = admission.review(body, self.holder.current, self.namespaces)
        except NotSynced:
            # Answered like an outage, so the webhook configuration's failurePolicy decides.
            return await self.refuse(send, 503, "podpatterns has not read the cluster's Namespaces yet; retry",
                                     "unavailable", body)
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

    async def refuse(self, send: Send, status: int, message: str, outcome: str, body: bytes,
                     close: bool = False) -> None:
        """An HTTP error with a JSON body, counted, and logged as one line with the uid when the body has one."""
        BY_OUTCOME[outcome].inc()
        event(logging.WARNING, "refused", status=status, reason=message, uid=_uid_in(body))
        await _send(send, status, _error(status, message), close or self.draining)


def create_app(holder: ConfigurationHolder, max_body_bytes: int = DEFAULT_MAX_BODY,
               namespaces: Namespaces | None = None, ready: Callable[[], bool] | None = None) -> Webhook:
    return Webhook(holder, max_body_bytes, namespaces, ready)


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


def _error(status: int, message: str) -> bytes:
    return orjson.dumps({"error": message, "code": status})
