"""The floor the harness measures podpatterns against, on the production uvicorn/TLS settings: a raw
ASGI app that reads the body and returns one constant AdmissionReview, the cost of uvicorn + TLS + HTTP
alone, the best any webhook on this stack can do.

Run as `python -m bench.baselines floor PORT CERT KEY`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import uvicorn

from webhook.server.serve import uvicorn_config

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


if __name__ == "__main__":
    name, port, cert, key = sys.argv[1:5]
    assert name == "floor", name
    uvicorn.Server(uvicorn_config(floor, "127.0.0.1", int(port), Path(cert), Path(key))).run()
