"""POST /validate: the AdmissionReview of a PatternTemplate CREATE, UPDATE or DELETE, answered with templatechange's verdict.

The chart's ValidatingWebhookConfiguration sends nothing else; anything else that arrives (another kind, a
subresource such as the status the server writes, CONNECT) is allowed, so this endpoint can never refuse a Pod.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from webhook.catalog import templatechange
from webhook.catalog.definition import GROUP, KIND
from webhook.core.configuration import Configuration
from webhook.logs import event
from webhook.server.admission import decode
from webhook.server import wire
from webhook.server.wire import AdmissionResponse, Status

REASONS = {400: "BadRequest", 403: "Forbidden"}


def review(body: bytes, configuration: Configuration, directories: Iterable[str | Path] = ()) -> bytes:
    """The AdmissionReview answering `body`; raises BadReview when it is not one. Loads entries (tens of
    milliseconds): the caller runs it off the event loop."""
    request = decode(body)
    uid = request["uid"]
    kind = request.get("kind")
    if not (isinstance(kind, dict) and kind.get("group") == GROUP and kind.get("kind") == KIND) or request.get("subResource"):
        return wire.encode(AdmissionResponse(uid, True))
    obj, old = _mapping(request.get("object")), _mapping(request.get("oldObject"))
    name = request.get("name") or ((obj or old or {}).get("metadata") or {}).get("name") or ""
    try:
        verdict = templatechange.judge(request.get("operation", ""), str(name), obj, old, configuration, directories)
    except Exception:  # a bug answers the apiserver all the same, refusing rather than storing what was not checked
        event(logging.ERROR, "internal error while validating a PatternTemplate", uid=uid, name=name, exc_info=True)
        return _deny(uid, 500, "podpatterns internal error; the webhook's log has the details")
    if not verdict.allowed:
        event(logging.INFO, "denied", uid=uid, kind=KIND, name=name, operation=request.get("operation"),
              reason=verdict.message)
        return _deny(uid, verdict.code, verdict.message)
    return wire.encode(AdmissionResponse(uid, True, warnings=list(verdict.warnings) or None))


def _mapping(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _deny(uid: str, code: int, message: str) -> bytes:
    return wire.encode(AdmissionResponse(uid, False, status=Status(code, message, REASONS.get(code, "InternalError"))))
