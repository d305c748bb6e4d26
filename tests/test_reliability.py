"""Connections, shutdown and logs of `podpatterns serve` under hostile clients and SIGTERM, over real TLS."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import threading
import time

import httpx
import pytest

from tests.helpers import Server, free_port, review, review_with
from webhook.cli.commands import _parser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("reliability"), "--quiet", "--read-timeout-seconds", "1",
                     "--idle-timeout-seconds", "1.5", "--max-head-bytes", "4096")
    yield running
    running.stop()


def tls_socket(server) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=server.ca)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return context.wrap_socket(sock, server_hostname="localhost")


def read_all(sock: ssl.SSLSocket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_response(sock: ssl.SSLSocket) -> bytes:
    """One response on a kept-alive connection (the server sends a content-length)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_and_json(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body), head.lower()


def request_head(length: int, extra: bytes = b"") -> bytes:
    return (b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n%s\r\n" % (length, extra))


def test_a_client_that_stops_halfway_through_the_head_gets_408_and_is_closed(server):
    with tls_socket(server) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nhost: localh")
        started = time.monotonic()
        status, error, head = status_and_json(read_all(sock))
    assert status == 408 and b"connection: close" in head
    assert error == {"error": "the request did not arrive whole within 1 s", "code": 408}
    assert 0.9 < time.monotonic() - started < 5


def test_a_client_that_stops_halfway_through_the_body_gets_408(server):
    body = json.dumps(review("pod-create-annotated")).encode()
    with tls_socket(server) as sock:
        sock.sendall(request_head(len(body)) + body[:100])
        status, error, _ = status_and_json(read_all(sock))
    assert status == 408 and error["code"] == 408
    assert server.mutate(review("pod-create-annotated")).status_code == 200


def test_a_trickling_client_is_cut_off_at_the_read_deadline(server):
    """One byte every 0.2 s keeps a connection busy but never idle: only the deadline ends it."""
    body = json.dumps(review("pod-create-annotated")).encode()
    started = time.monotonic()
    with tls_socket(server) as sock:
        sock.settimeout(0.2)  # each wait for an answer is the pause between two bytes
        raw = b""
        for byte in request_head(len(body)):
            sock.sendall(bytes([byte]))
            try:
                raw = sock.recv(65536)
                break
            except TimeoutError:
                continue
        answered = time.monotonic()
    assert status_and_json(raw)[0] == 408 and 0.9 < answered - started < 2


def test_a_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout(server):
    with tls_socket(server) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
    assert 1.3 < time.monotonic() - started < 5


def test_a_kept_alive_connection_serves_many_requests_and_closes_when_idle(server):
    with tls_socket(server) as sock:
        body = json.dumps(review("pod-create-annotated")).encode()
        for pause in (0.5, 0.5, 0):  # each pause shorter than the idle timeout
            sock.sendall(request_head(len(body)) + body)
            status, answer, head = status_and_json(read_response(sock))
            answered = time.monotonic()
            assert status == 200 and answer["response"]["allowed"] and b"connection: close" not in head
            time.sleep(pause)
        rest = read_all(sock)
    assert b"HTTP/1.1" not in rest and 1.3 < time.monotonic() - answered < 5


def test_oversized_request_heads_get_431(server):
    with tls_socket(server) as sock:
        sock.sendall(request_head(2, b"x-padding: " + b"a" * 5000 + b"\r\n") + b"{}")
        status, error, head = status_and_json(read_all(sock))
    assert status == 431 and error == {"error": "the request head is larger than 4096 bytes", "code": 431}
    with tls_socket(server) as sock:  # many small headers add up the same way
        sock.sendall(request_head(2, b"".join(b"x-h%d: v\r\n" % i for i in range(600))) + b"{}")
        assert status_and_json(read_all(sock))[0] == 431
    assert server.mutate(review("pod-create-annotated")).status_code == 200


def test_what_is_not_http_gets_a_json_400_too(server):
    with tls_socket(server) as sock:
        sock.sendall(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\x7f\r\n"
                     b"content-length: 2\r\n\r\n{}")
        status, error, head = status_and_json(read_all(sock))
    assert (status, error) == (400, {"error": "the request is not valid HTTP/1.1", "code": 400})
    assert b"content-type: application/json" in head


def test_an_oversized_body_is_refused_before_it_is_sent_and_the_connection_closed(server):
    with tls_socket(server) as sock:
        sock.sendall(request_head(4 * 1024 * 1024) + b"{" * 1000)  # announces 4 MiB, sends 1 KB
        status, error, head = status_and_json(read_all(sock))
    assert status == 413 and b"connection: close" in head
    assert error["error"] == "request body is larger than 3145728 bytes"


def test_the_default_idle_timeout_outlasts_the_apiservers_connection_pool():
    """kube-apiserver drops idle webhook connections after 90 s; the server must not close first."""
    assert _parser().parse_args(["serve"]).idle_timeout_seconds > 90


@pytest.mark.parametrize("flag, value, message", [
    ("--read-timeout-seconds", "0", "must be more than 0"),
    ("--idle-timeout-seconds", "-1", "must be more than 0"),
    ("--max-head-bytes", "100", "must be at least 1024"),
    ("--drain-seconds", "-1", "must be 0 or more"),
    ("--health-port", "70000", "must be a TCP port"),
])
def test_bad_limits_are_refused_naming_the_flag(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["serve", flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and message in err


# --- logs: one JSON line per refusal, denial and error, with the uid, and nothing secret

SECRET_VALUE = "s3cr3t-env-value"
LONG_ANNOTATION = "a" * 300 + "-tail-never-logged"


def test_refusals_and_denials_are_logged_as_one_json_line_with_the_uid_and_no_secrets(server):
    pod_review = review_with({"podpatterns.io/inject": "log-shipper",
                              "log-shipper.podpatterns.io/nope": LONG_ANNOTATION})
    container = pod_review["request"]["object"]["spec"]["containers"][0]
    container["env"] = [{"name": "PASSWORD", "value": SECRET_VALUE},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db-creds", "key": "token"}}}]
    pod_review["request"]["uid"] = "uid-denied-1"
    assert server.mutate(pod_review).json()["response"]["allowed"] is False
    bad = {"apiVersion": "v0", "kind": "AdmissionReview", "request": {"uid": "uid-bad-2"}}
    assert server.mutate(bad).status_code == 400
    assert server.mutate(b"not json").status_code == 400
    time.sleep(0.2)
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    by_uid = {line.get("uid"): line for line in lines if line.get("message") in ("denied", "refused")}
    assert by_uid["uid-denied-1"]["level"] == "info" and "nope" in by_uid["uid-denied-1"]["reason"]
    assert by_uid["uid-bad-2"]["status"] == 400
    assert any(line.get("uid") is None and line["reason"].startswith("body is not valid JSON") for line in lines
               if line.get("message") == "refused")
    text = server.output()
    assert SECRET_VALUE not in text and "db-creds" not in text and "-tail-never-logged" not in text


# --- SIGTERM: not ready first, then drain, finish what is in flight, exit 0


def test_sigterm_turns_readiness_false_finishes_in_flight_requests_and_exits_0(tmp_path):
    health = free_port()
    running = Server(tmp_path, "--quiet", "--drain-seconds", "1.5", "--health-port", str(health))
    body = json.dumps(review("pod-create-annotated")).encode()
    results: list[tuple[float, int, str]] = []  # (time, status, connection header)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=running.base, verify=ssl.create_default_context(cafile=running.ca),
                          timeout=10) as http:
            while not stop.is_set():
                try:
                    reply = http.post("/mutate", content=body, headers={"content-type": "application/json"})
                    results.append((time.monotonic(), reply.status_code, reply.headers.get("connection", "")))
                except httpx.HTTPError as err:
                    results.append((time.monotonic(), 0, repr(err)))

    # A request still in flight when the shutdown begins: its body is only half sent.
    slow = tls_socket(running)
    slow.sendall(request_head(len(body)) + body[:200])
    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1)
    assert httpx.get(f"http://127.0.0.1:{health}/readyz").status_code == 200
    signalled = time.monotonic()
    running.process.send_signal(signal.SIGTERM)
    not_ready = None
    while not_ready is None and time.monotonic() - signalled < 5:
        if httpx.get(f"http://127.0.0.1:{health}/readyz").status_code == 503:
            not_ready = time.monotonic()
        time.sleep(0.05)
    time.sleep(0.5)  # what the endpoints controller and kube-proxy take to stop sending here
    stop.set()
    for thread in clients:
        thread.join()
    slow.sendall(body[200:])  # the in-flight request completes during the drain
    slow_status, slow_answer, _ = status_and_json(read_all(slow))
    slow.close()
    exit_code = running.process.wait(20)
    exited = time.monotonic()
    running.stop()

    assert not_ready is not None and not_ready - signalled < 0.5, "readiness did not turn false at once"
    assert exit_code == 0, running.output()
    assert 1.5 <= exited - signalled < 1.5 + 10, "drained for --drain-seconds, within the grace period"
    failed = [r for r in results if r[1] != 200]
    assert len(results) > 20 and failed == [], failed[:3]
    after = [connection for at, _, connection in results if at > not_ready + 0.1]
    assert after and all(connection == "close" for connection in after), "draining answers close connections"
    assert slow_status == 200 and slow_answer["response"]["allowed"] is True
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{health}/healthz")
    log = running.output()
    assert '"message":"draining before shutdown","signal":"SIGTERM"' in log


def test_the_health_port_serves_probes_and_metrics_in_plain_http_but_never_mutate(tmp_path):
    health = free_port()
    running = Server(tmp_path, "--quiet", "--health-port", str(health))
    try:
        plain = httpx.Client(base_url=f"http://127.0.0.1:{health}", timeout=5)
        assert plain.get("/healthz").json() == {"status": "ok"}
        assert plain.get("/readyz").json() == {"status": "ready"}
        assert "podpatterns_admission_requests_total" in plain.get("/metrics").text
        assert plain.post("/mutate", json=review("pod-create-annotated")).status_code in (404, 405)
        assert running.mutate(review("pod-create-annotated")).status_code == 200  # TLS port unchanged
    finally:
        running.stop()
