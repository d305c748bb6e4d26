"""The AdmissionReview envelope: decode a request body, ask the engine, encode the response.

Everything that is an AdmissionReview gets an AdmissionReview back with the request's uid, whatever
is wrong inside it; only a body that is not one at all is refused (BadReview, HTTP 400).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import pybase64

from webhook.core import engine
from webhook.core.configuration import Configuration
from webhook.core.namespaces import Namespaces, NamespaceUnavailable, NotCached
from webhook.core.pod import NeedsWholePod
from webhook.logs import event
from webhook.server import wire
from webhook.server.wire import API_VERSION, AdmissionResponse, Status


class BadReview(ValueError):
    """The body is not an AdmissionReview v1 request."""


@dataclass
class Answer:
    body: bytes
    outcome: str  # one of webhook.metrics.OUTCOMES
    injected: list[str] = field(default_factory=list)


def review(body: bytes, configuration: Configuration, namespaces: Namespaces | None = None) -> Answer:
    """Raises BadReview, and NotCached when the Namespace is not in the cache (the caller waits for the lookup
    under way and asks again with what it read).

    A Pod's CREATE is answered from the typed decode of the fields the engine reads (webhook.server.wire); when
    that decode refuses the body, or the plan needs more of the Pod, from the whole review, as everything else."""
    request = wire.pod_create(body)
    if request is not None:
        try:
            return _guarded(request.uid, lambda: _create(request.uid, request.namespace or "", request.object,
                                                         configuration, namespaces, partial=True))
        except NeedsWholePod:
            pass
    whole = decode(body)
    return _guarded(whole["uid"], lambda: answer(whole, configuration, namespaces))


def _guarded(uid: str, decide: Callable[[], Answer]) -> Answer:
    try:
        return decide()
    except (NotCached, NeedsWholePod):
        raise
    except NamespaceUnavailable as err:  # refused with the reason, never decided without the Namespace's labels
        event(logging.WARNING, "denied: namespace unavailable", uid=uid, namespace=err.name, error=err.reason,
              reason=err.message)
        return Answer(wire.encode(AdmissionResponse(uid, False, status=Status(err.code, err.message, err.status_reason))),
                      "unavailable")
    except Exception:  # a bug must still answer the apiserver, and deny rather than skip injection
        event(logging.ERROR, "internal error while answering a review", uid=uid, exc_info=True)
        return Answer(_deny(uid, 500, "podpatterns internal error; the webhook's log has the details"), "error")


def decode(body: bytes) -> dict[str, Any]:
    """The request of an AdmissionReview v1 body (also /validate's); raises BadReview."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadReview(f"body is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise BadReview(f"body must be a JSON object (an AdmissionReview), got a JSON {type(doc).__name__}")
    if doc.get("kind") != "AdmissionReview" or doc.get("apiVersion") != API_VERSION:
        raise BadReview(f"body must be an AdmissionReview with apiVersion {API_VERSION}")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request object")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise BadReview("AdmissionReview request has no uid")
    return request


def answer(request: dict[str, Any], configuration: Configuration, namespaces: Namespaces | None = None) -> Answer:
    """The response to a decoded request: engine.plan plus the encoding of its result."""
    uid = request["uid"]
    kind = request.get("kind")
    is_pod = isinstance(kind, dict) and kind.get("kind") == "Pod" and kind.get("group") == ""
    # Only a new Pod is injected; an UPDATE may not change what was injected; subresources (ephemeralcontainers,
    # status, resize…) and other kinds pass unchanged.
    if not is_pod or request.get("subResource") or request.get("operation") not in ("CREATE", "UPDATE"):
        return Answer(_allow(uid), "unchanged")
    if request["operation"] == "UPDATE":
        refused = engine.check_update(request.get("oldObject"), request.get("object"), configuration.catalogue,
                                      configuration.settings)
        if refused is not None:
            event(logging.INFO, "denied", uid=uid, namespace=request.get("namespace"), reason=refused)
            return Answer(_deny(uid, 403, refused), "denied")
        return Answer(_allow(uid), "unchanged")
    namespace = request.get("namespace") if isinstance(request.get("namespace"), str) else ""
    return _create(uid, namespace, request.get("object"), configuration, namespaces)


def _create(uid: str, namespace: str, pod: Any, configuration: Configuration, namespaces: Namespaces | None,
            partial: bool = False) -> Answer:
    """A Pod's CREATE; `partial`: `pod` holds only the fields of webhook.core.podfields (raises NeedsWholePod)."""
    info = namespaces.lookup(namespace) if namespaces is not None else None
    plan = engine.plan(pod, configuration.catalogue, configuration.settings, namespace, namespace_info=info,
                       policy=configuration.policy, partial=partial, wire=True)
    if plan.denial is not None:
        event(logging.INFO, "denied", uid=uid, namespace=namespace, reason=plan.denial)
        return Answer(_deny(uid, 400, plan.denial, plan.warnings), "denied")
    if not plan.ops:
        return Answer(_allow(uid, warnings=plan.warnings), "unchanged")
    return Answer(_allow(uid, plan.ops, plan.warnings), "injected", plan.injected)


def _allow(uid: str, ops: list[dict[str, Any]] | None = None, warnings: list[str] | None = None) -> bytes:
    # pybase64 (SIMD): the stdlib's base64 took ~1 µs per KB of patch, more than building the patch.
    patch = pybase64.b64encode_as_string(orjson.dumps(ops)) if ops else None
    return wire.encode(AdmissionResponse(uid, True, "JSONPatch" if ops else None, patch, warnings=warnings or None))


def _deny(uid: str, code: int, message: str, warnings: list[str] | None = None) -> bytes:
    reason = {400: "BadRequest", 403: "Forbidden"}.get(code, "InternalError")
    return wire.encode(AdmissionResponse(uid, False, status=Status(code, message, reason), warnings=warnings or None))
