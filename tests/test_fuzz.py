"""Hostile and broken input through the real entry point: POST /mutate of a live `podpatterns serve` over TLS.

The inputs come from bench/hostile.py, the same generators `python3 -m bench.fuzz` sends 100,000 of;
here hypothesis drives them through `st.randoms()`, so a failure shrinks and replays. Every answer
must be an HTTP 200 with a well-formed AdmissionReview (no internal-error denial; a patch that applies
with jsonpatch and keeps a valid Pod valid), or an HTTP 4xx with a JSON error; never a 5xx or a hang.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import sys
import threading
from typing import Any

import httpx
import jsonpatch
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from bench import hostile
from bench.fuzz import classify
from tests.helpers import (
    ROOT,
    SCHEMA_VERSIONS,
    Server,
    assert_valid_pod,
    pod_schema,
    review,
    review_with,
)

API_VERSION = "admission.k8s.io/v1"
RANDOMS = st.randoms(use_true_random=False)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("fuzz"), "--drain-seconds", "0")  # no readiness grace at the end
    yield running
    running.stop()


def note(label: str) -> None:
    """Counts `label` in hypothesis's statistics (pytest --hypothesis-show-statistics) inside a hypothesis test."""
    if currently_in_test_context():
        event(label)


def post(server: Server, item: hostile.Case) -> httpx.Response:
    try:
        return server.client.post("/mutate", content=item.body, headers=item.headers)  # the client times out at 10 s
    except httpx.TimeoutException:
        pytest.fail(f"no answer within 10 s to {hostile.describe(item)}")


def decoded(body: bytes) -> Any:
    """The body as the server's JSON parser reads it, or None."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def is_review(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    request = doc.get("request")
    return (doc.get("apiVersion") == API_VERSION and doc.get("kind") == "AdmissionReview"
            and isinstance(request, dict) and isinstance(request.get("uid"), str) and request["uid"] != "")


SCHEMAS = [pod_schema(version) for version in SCHEMA_VERSIONS]


def valid_pod(pod: Any) -> bool:
    """Whether tests.helpers.assert_valid_pod accepts the Pod; most invalid ones are told by the schema alone."""
    try:
        if not isinstance(pod, dict) or not all(s.is_valid({"apiVersion": "v1", "kind": "Pod", **pod}) for s in SCHEMAS):
            return False
        assert_valid_pod(pod)
    except Exception:  # a ValidationError, a shape assert_valid_pod cannot walk, nesting too deep for jsonschema
        return False
    return True


def check(server: Server, item: hostile.Case) -> None:
    reply = post(server, item)
    shown = hostile.describe(item)
    note(f"HTTP {reply.status_code}")
    assert reply.status_code < 500, f"HTTP {reply.status_code} {reply.content[:300]!r} for {shown}"
    assert reply.headers["content-type"] == "application/json", shown
    answer = reply.json()
    doc = decoded(item.body)
    if len(item.body) > hostile.MAX_BODY:
        assert (reply.status_code, answer) == (413, {"error": "request body is larger than 3145728 bytes", "code": 413})
        return
    if not is_review(doc) or not item.valid_http:  # the latter refused by the HTTP parser, still in JSON
        assert reply.status_code == 400, f"{reply.status_code} for {shown}"
        assert isinstance(answer["error"], str) and answer["error"] and answer["code"] == 400, answer
        return
    assert reply.status_code == 200, f"{reply.status_code} {answer} for {shown}"
    assert answer["apiVersion"] == API_VERSION and answer["kind"] == "AdmissionReview"
    request, response = doc["request"], answer["response"]
    assert response["uid"] == request["uid"]
    assert type(response["allowed"]) is bool
    assert all(isinstance(w, str) for w in response.get("warnings", [])), response
    note("allowed, patched" if "patch" in response else "allowed" if response["allowed"] else "denied")
    if not response["allowed"]:
        # A 500 here is podpatterns' own bug answered safely: still a bug.
        assert response["status"]["code"] == 400, f"{response['status']} for {shown}"
        assert response["status"]["reason"] == "BadRequest" and response["status"]["message"]
        assert "patch" not in response
        return
    if "patch" not in response:
        return
    assert request["operation"] == "CREATE" and request["kind"]["kind"] == "Pod", shown
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    pod = request["object"]
    was_valid = valid_pod(pod)
    patched = jsonpatch.JsonPatch(ops).apply(pod, in_place=True)  # a fresh decode: nothing else uses it
    note(f"patched a {'valid' if was_valid else 'invalid'} Pod")
    if was_valid:
        assert_valid_pod(patched)


# Inputs per generator of bench/hostile.py: the whole file stays within about 40 s on two CPUs (most of it
# validating Pods), and bench.fuzz sends 100,000.
EXAMPLES = {"structure": 60, "strings": 40, "annotations": 50, "huge": 6, "deep": 25, "duplicates": 30, "garbage": 60}


def test_every_generator_is_fuzzed():
    assert set(EXAMPLES) == set(hostile.KINDS)


@pytest.mark.parametrize("kind", EXAMPLES)
def test_hostile_input_gets_a_well_formed_answer(fuzz_server, kind):
    @settings(max_examples=EXAMPLES[kind], deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(rng=RANDOMS)
    def run(rng):
        check(fuzz_server, hostile.KINDS[kind](rng))

    run()


# Regressions: what fuzzing found, each answered with an internal-error denial (code 500) before the fix.

@pytest.mark.parametrize(
    ("field", "item", "message"),
    [
        ("env", {"name": ["DB_HOST"], "value": "x"}, "spec.containers[0].env[0].name must be a string, got list"),
        ("volumeMounts", {"name": "data", "mountPath": {"p": 1}},
         "spec.containers[0].volumeMounts[0].mountPath must be a string, got object"),
        ("ports", {"containerPort": 80, "protocol": ["TCP"]}, "spec.containers[0].ports[0].protocol must be a string, got list"),
    ],
    ids=["env-name", "mount-path", "port-protocol"],
)
def test_a_field_the_engine_keys_by_must_be_a_string(fuzz_server, field, item, message):
    body = review_with({"podpatterns.io/inject": "db-ambassador", "db-ambassador.podpatterns.io/upstream": "pg:5432"})
    body["request"]["object"]["spec"]["containers"][0][field] = [item]
    response = fuzz_server.mutate(body).json()["response"]
    assert response["allowed"] is False
    assert response["status"] == {"code": 400, "reason": "BadRequest", "message": f"the object is not a valid Pod: {message}"}


def test_a_status_record_with_extra_fields_nested_deeper_than_orjson_writes(fuzz_server):
    nested = "[" * 300 + "]" * 300  # orjson reads 1024 levels, writes 255
    status = '[{"entry":"json-log-adapter","pattern":"adapter","digest":"sha256:0","note":' + nested + "}]"
    body = review_with({"podpatterns.io/inject": "log-shipper", "podpatterns.io/status": status})
    response = fuzz_server.mutate(body).json()["response"]
    assert response["allowed"] is True
    ops = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(body["request"]["object"], ops)
    assert_valid_pod(patched)
    records = json.loads(patched["metadata"]["annotations"]["podpatterns.io/status"])
    # The record is kept, without what podpatterns never writes.
    assert records[0] == {"entry": "json-log-adapter", "pattern": "adapter", "digest": "sha256:0"}
    assert [r["entry"] for r in records] == ["json-log-adapter", "log-shipper"]


def test_a_mix_on_concurrent_connections_leaves_the_server_alive_and_its_log_clean(fuzz_server):
    """Every kind at once from four keep-alive connections, each answer judged as bench.fuzz judges it
    (the tests above apply and validate the patches); then /healthz, the process, and the log."""
    problems: list[str] = []

    def client(part: int) -> None:
        with httpx.Client(base_url=fuzz_server.base, verify=ssl.create_default_context(cafile=fuzz_server.ca),
                          timeout=10) as own:
            for index in range(part, 400, 4):
                item = hostile.case_at(20240601, index)
                try:
                    reply = own.post("/mutate", content=item.body, headers=item.headers)
                except httpx.HTTPError as err:
                    problems.append(f"input {index}: {err!r}")
                    continue
                _, problem = classify(item, reply.status_code, reply.headers.get("content-type", ""), reply.content)
                if problem:
                    problems.append(f"input {index}: {problem}: HTTP {reply.status_code} {reply.content[:200]!r}")

    threads = [threading.Thread(target=client, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not problems, problems
    assert fuzz_server.process.poll() is None
    assert fuzz_server.client.get("/healthz").json() == {"status": "ok"}
    log = fuzz_server.output()
    assert '"level":"error"' not in log and "Traceback" not in log, log[-3000:]
    # The same review as before all of this still gets its sidecar.
    answer = fuzz_server.mutate(review("pod-create-annotated")).json()["response"]
    assert answer["allowed"] is True and "patch" in answer


def test_the_bench_fuzzer_runs_and_its_counts_add_up():
    done = subprocess.run([sys.executable, "-m", "bench.fuzz", "--count", "2000", "--seed", "7", "--clients", "4",
                           "--max-seconds", "120"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "# /mutate fuzzing: 2000 of 2000 inputs, seed 7, 4 clients" in out

    def rows(title: str) -> dict[str, int]:
        section = out.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        return {m[1]: int(m[2]) for m in re.finditer(r"^\| (.+?) \| (\d+) \|$", section, re.M)}

    statuses = rows("HTTP status")
    outcomes = rows("AdmissionReview outcome (HTTP 200)")
    assert sum(statuses.values()) == 2000, statuses
    assert sum(outcomes.values()) == statuses["200"], (outcomes, statuses)
    assert statuses["200"] > 1000 and statuses["400"] > 100, statuses  # the mix reaches the engine and the refusals
    assert {"allowed, patched", "allowed, unchanged", "denied, code 400"} <= set(outcomes), outcomes
    assert not [s for s in statuses if s.startswith("5")]
    for problem in ("5xx", "timeout", "connection error", "malformed answer", "internal-error denial",
                    "error lines in the server's log"):
        assert f"- {problem}: 0\n" in out, out
    assert "- server alive and answering /healthz at the end: yes" in out
    assert out.rstrip().endswith("result: no problems")
