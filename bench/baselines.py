"""Servers the harness measures podpatterns against, on the production uvicorn/TLS settings.

- `floor`: a raw ASGI app that reads the body and returns one constant AdmissionReview: the cost of
  uvicorn + TLS + HTTP alone, the best any webhook on this stack can do.
- `engine`: a raw ASGI app that answers with webhook.admission.review, without FastAPI: the difference
  to podpatterns itself is what the framework layer costs.

Run as `python -m bench.baselines floor|engine PORT CERT KEY`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import uvicorn

from webhook import admission, catalogue
from webhook.configuration import Configuration
from webhook.engine import Settings
from webhook.serve import uvicorn_config

CONSTANT = orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                         "response": {"uid": "00000000-0000-0000-0000-000000000000", "allowed": True}})
HEADERS = [(b"content-type", b"application/json")]


async def _body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def floor(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    await _body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": CONSTANT})


CONFIGURATION = Configuration(catalogue.load(), Settings())


async def engine(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    answer = admission.review(await _body(receive), CONFIGURATION)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": answer.body})


if __name__ == "__main__":
    name, port, cert, key = sys.argv[1:5]
    app = {"floor": floor, "engine": engine}[name]
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", int(port), Path(cert), Path(key))).run()
