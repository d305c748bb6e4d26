"""The HTTP edge: FastAPI routes for /mutate, /healthz, /readyz and /metrics.

/mutate takes the raw body and returns raw bytes: no request model, no response model, no JSON
re-encoding by the framework, because the engine's own orjson answer is already the response.
"""

from __future__ import annotations

import time

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from webhook import admission
from webhook.configuration import ConfigurationHolder
from webhook.metrics import BY_OUTCOME, LATENCY, count_injection

DEFAULT_MAX_BODY = 3 * 1024 * 1024  # the apiserver's own limit on a request body
JSON = "application/json"


class BodyTooLarge(Exception):
    pass


def create_app(holder: ConfigurationHolder, max_body_bytes: int = DEFAULT_MAX_BODY) -> FastAPI:
    app = FastAPI(title="podpatterns", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.ready = True

    @app.post("/mutate")
    async def mutate(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await _read_body(request, max_body_bytes)
            answer = admission.review(body, holder.current)
        except BodyTooLarge:
            BY_OUTCOME["invalid"].inc()
            return _error(413, f"request body is larger than {max_body_bytes} bytes")
        except admission.BadReview as err:
            BY_OUTCOME["invalid"].inc()
            return _error(400, str(err))
        BY_OUTCOME[answer.outcome].inc()
        if answer.injected:
            count_injection(answer.injected)
        LATENCY.observe(time.perf_counter() - started)
        return Response(answer.body, media_type=JSON)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        if app.state.ready:
            return Response(b'{"status":"ready"}', media_type=JSON)
        return Response(b'{"status":"not ready"}', status_code=503, media_type=JSON)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge  # refused before a byte of the body is read
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message, "code": status}), status_code=status, media_type=JSON)
