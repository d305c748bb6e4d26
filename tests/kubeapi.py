"""An in-memory stand-in for the Kubernetes API that the real `kubernetes` client talks to over HTTP.

Objects live in one store keyed by their API path, each write bumps a cluster-wide resourceVersion
(as etcd's revision does), and errors come back as `Status` objects shaped like the real ones, so
the client raises the exceptions it raises against a real cluster. Faults (errors, delays, a
rendezvous that holds requests until N of them have arrived, a hold until the test releases it)
make races deterministic. Every change is recorded as a watch event, and `?watch=true` streams
them as JSON lines from a resourceVersion, as the real API does: a watch from before the
compaction point gets 410 Gone, and faults expire or drop a watch on demand.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import jsonpatch
import yaml
from kubernetes import client

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# The merge keys of the lists that strategic merge patches of the stored kinds touch (the real API
# reads them from the Go types' patchMergeKey tags).
MERGE_KEYS = {"webhooks": "name", "containers": "name", "initContainers": "name", "volumes": "name", "env": "name"}

# Resources served with a status subresource, as a CRD with `subresources: {status: {}}` is: `…/NAME/status` reads and
# writes the status only, a write of the object itself keeps the stored status, and metadata.generation counts the
# changes of everything else.
STATUS_SUBRESOURCES = {"patterntemplates.podpatterns.io"}

DEFAULT_VERSION = {"major": "1", "minor": "36", "gitVersion": "v1.36.0", "gitCommit": "0" * 40,
                   "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.1",
                   "compiler": "gc", "platform": "linux/amd64"}


class ApiError(Exception):
    """Becomes a `Status` response."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass(frozen=True)
class Location:
    """Where a path points: a collection (`name` None) or one object of a resource."""

    group: str  # "" for the core API
    version: str
    resource: str
    namespace: str | None
    name: str | None
    subresource: str | None = None  # "status" (STATUS_SUBRESOURCES only)

    @property
    def collection(self) -> str:
        root = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        scope = f"/namespaces/{self.namespace}" if self.namespace else ""
        return f"{root}{scope}/{self.resource}"

    @property
    def qualified(self) -> str:
        """The resource as the real API names it in messages: `secrets`, `mutatingwebhookconfigurations.admissionregistration.k8s.io`."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def details(self, name: str) -> dict[str, Any]:
        details = {"name": name, "kind": self.resource}
        if self.group:
            details["group"] = self.group
        return details

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{self.qualified} "{name}" not found', self.details(name))


def locate(path: str) -> Location:
    """/api/v1/namespaces/NS/secrets/NAME, /apis/GROUP/VERSION/RESOURCE[/NAME], and their collections."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) == 3 and rest[2] == "status" and (f"{rest[0]}.{group}" if group else rest[0]) in STATUS_SUBRESOURCES:
        return Location(group, version, rest[0], namespace, rest[1], "status")
    if len(rest) > 2:
        raise ApiError(404, "NotFound", f"the stand-in serves no subresource: {path}")
    return Location(group, version, rest[0], namespace, rest[1] if len(rest) == 2 else None)


@dataclass
class Fault:
    """Applies to the next `times` requests whose method matches and whose path starts with `path`
    (and, with `watch` set, that are or are not watches)."""

    method: str
    path: str
    times: int = 1
    watch: bool | None = None  # True: only watch requests; False: only the others
    status: int | None = None  # answer with this error instead of serving the request
    reason: str = "InternalError"
    message: str = "injected fault"
    delay: float = 0.0  # seconds to wait before serving
    rendezvous: threading.Barrier | None = None  # hold each request until this many are waiting
    hold: threading.Event | None = None  # hold each request until `release()`
    gone_event: bool = False  # a watch answers 200 and one ERROR event with a 410 Status, as after compaction
    drop_after: int | None = None  # a watch breaks mid-event instead of sending event N+1 (at once for 0)
    garbage: bool = False  # a watch starts with a line that is not JSON
    end_at_once: bool = False  # a watch ends cleanly before any event (as a misbehaving proxy may)
    hits: int = 0

    def matches(self, method: str, path: str, watching: bool) -> bool:
        return (self.hits < self.times and method == self.method and path.startswith(self.path)
                and self.watch in (None, watching))

    def release(self) -> None:
        if self.hold is not None:
            self.hold.set()


@dataclass(frozen=True)
class WatchEvent:
    revision: int
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    collection: str
    object: dict[str, Any]

    def line(self) -> bytes:
        return json.dumps({"type": self.type, "object": self.object}).encode() + b"\n"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any
    status: int = 0
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def watching(self) -> bool:
        return self.method == "GET" and self.query.get("watch", [""])[0] in ("true", "1")

    def parameter(self, name: str) -> str | None:
        return self.query.get(name, [None])[0]


@dataclass
class KubeApi:
    """Start with `KubeApi()`, stop with `close()`; `url`, `kubeconfig()` and `client()` point at it."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    version: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_VERSION))
    revision: int = 100
    events: list[WatchEvent] = field(default_factory=list)
    compacted: int = 0  # a watch from an older resourceVersion gets 410 Gone
    # GET /api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH (the pod proxy; NAME may be `https:NAME:PORT`) answers the
    # text at (NS, "NAME:PORT", "PATH"); an existing Pod without an entry gets the apiserver's 503 (port not reachable).
    proxy: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # What admission does to a `?dryRun=All` create (the webhooks the real apiserver calls): (location, object) ->
    # the object admitted, or an ApiError. A dry run stores nothing; without `admit` it comes back as sent.
    admit: Callable[[Location, dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # wakes the open watches
        self.closed = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
            # Headers and body go out in two writes: without TCP_NODELAY every answer waits ~40 ms for the
            # client's delayed ACK.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                api._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A short poll interval: close() waits for one.
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="kubeapi", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        """Stops answering: open watches end, held requests go on, and any later request, even on a connection
        kept alive, breaks without an answer (an API that went away); new connections are refused."""
        with self.lock:
            self.closed = True  # open watches end, held requests go on
            self.changed.notify_all()
            for fault in self.faults:
                fault.release()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> KubeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pointing clients at it

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig file whose current context is this stand-in."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in", "preferences": {},
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "stand-in", "user": {"token": "stand-in-token"}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
        }))
        return path

    def client(self) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    # --- direct access for tests (no request is logged)

    def get(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.objects.get(path)
            return copy.deepcopy(found) if found is not None else None

    def put(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
        """Stores `obj` at `path` as a write through the API would (new resourceVersion)."""
        with self.lock:
            location = locate(path)
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["name"] = location.name
            old = self.objects.get(path)
            _identify(location, obj, old)
            if "generation" not in obj["metadata"]:  # a test may set it, to stage a controller's lag
                _generation(location, old, obj)
            return self._commit(path, obj, "MODIFIED" if old is not None else "ADDED")

    def delete(self, path: str) -> None:
        """Deletes the object at `path` as a DELETE through the API would (a DELETED event)."""
        with self.lock:
            self._delete(locate(path), path)

    def bookmark(self, collection: str, kind: str) -> None:
        """A BOOKMARK event at the current resourceVersion for the open watches that allow them."""
        with self.lock:
            self._record(WatchEvent(self.revision, "BOOKMARK", collection,
                                    {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(self.revision)}}))

    def compact(self) -> int:
        """Forgets the history before now: a watch from an older resourceVersion gets 410 Gone."""
        with self.lock:
            self.compacted = self.revision
            return self.compacted

    def fault(self, method: str, path: str, **settings: Any) -> Fault:
        """Adds a fault; `rendezvous=N` holds the matching requests until N of them are waiting, `hold=True`
        until the fault's `release()`."""
        parties = settings.pop("rendezvous", None)
        hold = threading.Event() if settings.pop("hold", False) else None
        added = Fault(method, path, rendezvous=threading.Barrier(parties, timeout=10) if parties else None, hold=hold,
                      **settings)
        with self.lock:
            self.faults.append(added)
        return added

    def requested(self, method: str, path: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and (path is None or r.path == path)]

    def watches(self, path: str) -> list[Request]:
        """The watch requests of a collection, in order."""
        return [r for r in self.requested("GET", path) if r.watching]

    def lists(self, path: str) -> list[Request]:
        """The list requests of a collection (not watches), in order."""
        return [r for r in self.requested("GET", path) if not r.watching]

    # --- the HTTP side

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if self.closed:  # gone: a kept-alive connection breaks instead of answering
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        request = Request(handler.command, url.path, parse_qs(url.query), content_type, json.loads(raw) if raw else None)
        with self.lock:
            self.requests.append(request)
            fault = next((f for f in self.faults if f.matches(request.method, request.path, request.watching)), None)
            if fault is not None:
                fault.hits += 1
        try:
            if fault is not None:
                self._suffer(fault)
            if request.watching:
                return self._watch(handler, request, fault)
            code, body = self._route(request)
        except ApiError as err:
            code, body = err.code, err.status()
        request.status = code
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()  # str: a proxied text
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", "text/plain; version=0.0.4" if isinstance(body, str) else "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up waiting (its timeout) and closed the connection
            handler.close_connection = True

    @staticmethod
    def _suffer(fault: Fault) -> None:
        if fault.rendezvous is not None:
            fault.rendezvous.wait()
        if fault.hold is not None:
            fault.hold.wait(60)
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status is not None:
            raise ApiError(fault.status, fault.reason, fault.message)

    def _route(self, request: Request) -> tuple[int, dict[str, Any]]:
        if request.path in ("/version", "/version/"):
            if request.method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return 200, self.version
        proxied = _POD_PROXY.match(request.path)
        if proxied and request.method == "GET":
            return self._proxy(*(unquote(part) for part in proxied.groups()))
        location = locate(request.path)
        if location.name is None and request.method == "POST" and request.parameter("dryRun") == "All":
            return 201, self._dry_run(location, request.body)  # admitted without the lock: `admit` may take a while
        with self.lock:
            if location.name is None:
                if request.method == "GET":
                    return 200, self._list(location, request.query)
                if request.method == "POST":
                    return 201, self._create(location, request.body)
            else:
                path = f"{location.collection}/{location.name}"
                if request.method == "GET":
                    return 200, self._existing(location, path)
                if location.subresource == "status" and request.method in ("PUT", "PATCH"):
                    return 200, self._status(location, path, request.content_type if request.method == "PATCH" else None,
                                             request.body)
                if request.method == "PUT":
                    return 200, self._update(location, path, request.body)
                if request.method == "PATCH":
                    return 200, self._patch(location, path, request.content_type, request.body)
                if request.method == "DELETE":
                    return 200, self._delete(location, path)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # --- the verbs

    def _proxy(self, namespace: str, target: str, path: str) -> tuple[int, str]:
        pod = target.removeprefix("https:").removeprefix("http:").split(":")[0]
        with self.lock:
            text = self.proxy.get((namespace, target, path))
            if text is None and f"/api/v1/namespaces/{namespace}/pods/{pod}" not in self.objects:
                raise ApiError(404, "NotFound", f'pods "{pod}" not found', {"name": pod, "kind": "pods"})
        if text is None:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: dial tcp 10.0.0.1:{target.rsplit(':', 1)[-1]}: "
                           "connect: connection refused")
        return 200, text

    def _dry_run(self, location: Location, body: Any) -> dict[str, Any]:
        """A create with dryRun=All: named (generateName too), admitted by `admit`, stored nowhere."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {}) if isinstance(obj, dict) else {}
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = _body_name(obj)
        with self.lock:
            if f"{location.collection}/{name}" in self.objects:
                raise ApiError(409, "AlreadyExists", f'{location.qualified} "{name}" already exists', location.details(name))
        _identify(location, obj, None)
        return self.admit(location, obj) if self.admit is not None else obj

    def _existing(self, location: Location, path: str) -> dict[str, Any]:
        found = self.objects.get(path)
        if found is None:
            raise location.not_found(location.name or "")
        return copy.deepcopy(found)

    def _list(self, location: Location, query: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """A namespace's collection, or (no namespace in the path) the resource across all namespaces, as
        `kubectl get -A` lists it; `labelSelector` (equality and `!key`/`key` terms) filters as the real API does."""
        selector = _label_selector((query or {}).get("labelSelector", [""])[0])
        items = [copy.deepcopy(o) for p, o in sorted(self.objects.items())
                 if _in_collection(p, location) and selector((o.get("metadata") or {}).get("labels") or {})]
        return {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.revision)}, "items": items}

    def _create(self, location: Location, body: Any) -> dict[str, Any]:
        name = _body_name(body)
        path = f"{location.collection}/{name}"
        if path in self.objects:
            raise ApiError(409, "AlreadyExists", f'{location.qualified} "{name}" already exists', location.details(name))
        obj = copy.deepcopy(body)
        _identify(location, obj, None)
        _generation(location, None, obj)
        return self._commit(path, obj, "ADDED")

    def _update(self, location: Location, path: str, body: Any) -> dict[str, Any]:
        name = _body_name(body)
        if name != location.name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        old = self._existing(location, path)
        wanted = body["metadata"].get("resourceVersion")
        self._precondition(location, old, wanted)
        obj = copy.deepcopy(body)
        _immutable(location, old, obj)
        _identify(location, obj, old)
        _generation(location, old, obj)
        return self._commit(path, obj, "MODIFIED")

    def _patch(self, location: Location, path: str, content_type: str, body: Any) -> dict[str, Any]:
        old = self._existing(location, path)
        if content_type == JSON_PATCH:
            try:
                obj = jsonpatch.JsonPatch(body).apply(old)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {err}")
        elif content_type == MERGE_PATCH:
            obj = merge_patch(old, body)
        elif content_type == STRATEGIC_MERGE_PATCH:
            obj = merge_patch(old, body, MERGE_KEYS)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}")
        # A resourceVersion in the patch is a precondition, as in the real API.
        self._precondition(location, old, obj.get("metadata", {}).get("resourceVersion"))
        _immutable(location, old, obj)
        _generation(location, old, obj)
        return self._commit(path, obj, "MODIFIED")

    def _status(self, location: Location, path: str, content_type: str | None, body: Any) -> dict[str, Any]:
        """A PUT (content_type None) or PATCH of `…/status`: of what it sends, only the status is kept."""
        old = self._existing(location, path)
        if content_type is None:
            sent = copy.deepcopy(body)
            self._precondition(location, old, (sent.get("metadata") or {}).get("resourceVersion"))
        elif content_type == JSON_PATCH:
            sent = jsonpatch.JsonPatch(body).apply(copy.deepcopy(old))
        elif content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            sent = merge_patch(old, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")
        obj = copy.deepcopy(old)
        obj.pop("status", None)
        if sent.get("status") is not None:
            obj["status"] = sent["status"]
        return self._commit(path, obj, "MODIFIED")

    def _delete(self, location: Location, path: str) -> dict[str, Any]:
        old = self._existing(location, path)
        del self.objects[path]
        self.revision += 1
        # The DELETED event carries the object as it was, at the revision of its deletion.
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.revision)
        self._record(WatchEvent(self.revision, "DELETED", location.collection, gone))
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {**location.details(old["metadata"]["name"]), "uid": old["metadata"]["uid"]}}

    @staticmethod
    def _precondition(location: Location, old: dict[str, Any], wanted: str | None) -> None:
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            name = old["metadata"]["name"]
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {location.qualified} "{name}": the object '
                           "has been modified; please apply your changes to the latest version and try again",
                           location.details(name))

    def _commit(self, path: str, obj: dict[str, Any], change: str) -> dict[str, Any]:
        """Every write but a delete ends here: a new revision stamped on the object, and a watch event."""
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.objects[path] = obj
        self._record(WatchEvent(self.revision, change, path.rsplit("/", 1)[0], copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    def _record(self, event: WatchEvent) -> None:
        self.events.append(event)
        self.changed.notify_all()

    # --- watch streams

    def _watch(self, handler: BaseHTTPRequestHandler, request: Request, fault: Fault | None) -> None:
        """Streams the collection's events after `resourceVersion` (all objects as ADDED first without one)
        until `timeoutSeconds`, as chunked JSON lines."""
        location = locate(request.path)
        if location.name is not None:
            raise ApiError(405, "MethodNotAllowed", "the stand-in watches collections only")
        since = request.parameter("resourceVersion") or "0"
        if not since.isdigit():
            raise ApiError(400, "BadRequest", f"invalid resource version: {since!r}")
        bookmarks = request.parameter("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + float(request.parameter("timeoutSeconds") or 1800)
        with self.lock:
            if since == "0":  # the current state first, as the real API does
                initial = [WatchEvent(self.revision, "ADDED", location.collection, copy.deepcopy(o))
                           for p, o in sorted(self.objects.items()) if p.rsplit("/", 1)[0] == location.collection]
                position = len(self.events)
            else:
                initial = []
                position = next((i for i, e in enumerate(self.events) if e.revision > int(since)), len(self.events))
            expired = int(since) < self.compacted and since != "0"
            current = self.revision
        request.status = 200
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        stream = _Chunks(handler)
        try:
            if fault is not None and fault.garbage:
                stream.send(b"this is not a watch event\n")
            if expired or (fault is not None and fault.gone_event):
                status = ApiError(410, "Expired", f"too old resource version: {since} ({self.compacted or current})").status()
                stream.send(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
                return stream.end()
            if fault is not None and fault.drop_after == 0:
                return stream.drop(b"")
            if fault is not None and fault.end_at_once:
                return stream.end()
            sent, pending = 0, initial
            while True:
                for event in pending:
                    if event.collection != location.collection or (event.type == "BOOKMARK" and not bookmarks):
                        continue
                    if fault is not None and fault.drop_after is not None and sent >= fault.drop_after:
                        return stream.drop(event.line())
                    stream.send(event.line())
                    sent += 1
                with self.lock:
                    while position >= len(self.events) and not self.closed and time.monotonic() < deadline:
                        self.changed.wait(max(0.0, deadline - time.monotonic()))
                    pending, position = self.events[position:], len(self.events)
                if not pending:  # timed out, or the stand-in is closing
                    return stream.end()
        except OSError:  # the client went away
            handler.close_connection = True


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (its timeout, a reset) is no error of the stand-in's; anything else is printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Chunks:
    """HTTP/1.1 chunked transfer: how the real API streams a watch."""

    def __init__(self, handler: BaseHTTPRequestHandler):
        self.handler = handler

    def send(self, data: bytes) -> None:
        self.handler.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        self.handler.wfile.write(b"0\r\n\r\n")

    def drop(self, data: bytes) -> None:
        """Half of a chunk (if any), then the connection breaks (as when a load balancer cuts it)."""
        if data:
            self.handler.wfile.write(b"%X\r\n%s" % (len(data), data[: len(data) // 2]))
        self.handler.connection.shutdown(socket.SHUT_RDWR)
        self.handler.close_connection = True


def _in_collection(path: str, location: Location) -> bool:
    parent = path.rsplit("/", 1)[0]
    if parent == location.collection:
        return True
    if location.namespace is not None:
        return False
    # /api/v1/pods lists /api/v1/namespaces/*/pods
    root, _, resource = location.collection.rpartition("/")
    head, _, rest = parent.partition(f"{root}/namespaces/")
    return not head and rest.count("/") == 1 and rest.endswith(f"/{resource}")


def _label_selector(text: str):
    """A matcher for a labelSelector of `k=v`, `k==v`, `k!=v`, `k` and `!k` terms (set-based terms are not served)."""
    terms = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(lambda labels, k=key.strip(), v=value.strip(): labels.get(k) != v)
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append(lambda labels, k=key.strip(), v=value.strip(): labels.get(k) == v)
        elif term.startswith("!"):
            terms.append(lambda labels, k=term[1:].strip(): k not in labels)
        else:
            terms.append(lambda labels, k=term: k in labels)
    return lambda labels: all(t(labels) for t in terms)


_POD_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/proxy/?(.*)$")


def _body_name(body: Any) -> str:
    name = body.get("metadata", {}).get("name") if isinstance(body, dict) else None
    if not name:
        raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
    return name


def _identify(location: Location, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """uid and creationTimestamp kept from the stored object or new; the namespace is the path's."""
    meta = obj["metadata"]
    if old is None:
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        meta["uid"], meta["creationTimestamp"] = old["metadata"]["uid"], old["metadata"]["creationTimestamp"]
    if location.namespace:
        meta["namespace"] = location.namespace


def _generation(location: Location, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """metadata.generation of the apps/v1 workloads as the real API keeps it: 1 at creation, one more for each
    change of the spec (a `rollout restart` patch); status and metadata changes leave it."""
    if location.qualified in STATUS_SUBRESOURCES:
        return _custom_generation(old, new)
    if location.group != "apps":
        return
    before = int((old or {}).get("metadata", {}).get("generation") or 0)
    new["metadata"]["generation"] = before + 1 if old is None or old.get("spec") != new.get("spec") else before


def _custom_generation(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """A custom resource with a status subresource: the stored status survives a write of the object, and the
    generation grows with each change of anything but metadata and status."""
    if old is not None:
        new.pop("status", None)
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
    else:
        new.pop("status", None)

    def rest(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

    before = int((old or {}).get("metadata", {}).get("generation") or 0)
    new["metadata"]["generation"] = before + 1 if old is None or rest(old) != rest(new) else before


def _immutable(location: Location, old: dict[str, Any], new: dict[str, Any]) -> None:
    # The one immutable field the stored kinds have that a client might trip over.
    if location.resource == "secrets" and old.get("type", "Opaque") != new.get("type", "Opaque"):
        raise ApiError(422, "Invalid", f'Secret "{old["metadata"]["name"]}" is invalid: type: Invalid value: '
                       f'"{new.get("type")}": field is immutable')


def merge_patch(target: Any, patch: Any, merge_keys: dict[str, str] | None = None, key: str | None = None) -> Any:
    """RFC 7386 (objects merge recursively, null deletes, anything else replaces); with `merge_keys`, a
    strategic merge patch without directives: those lists merge item by item on their key."""
    merge_keys = merge_keys or {}
    if isinstance(patch, list) and key in merge_keys and isinstance(target, list):
        on = merge_keys[key]
        result = copy.deepcopy(target)
        for item in patch:
            at = next((i for i, old in enumerate(result) if old.get(on) == item.get(on)), None)
            if at is None:
                result.append(copy.deepcopy(item))
            else:
                result[at] = merge_patch(result[at], item, merge_keys)
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value, merge_keys, name)
    return result
