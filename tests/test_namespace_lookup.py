"""A review for a Namespace the cache has not seen (created moments ago, a held-back watch, no list yet) reads it
from the API, within a bound, caches it, and is decided with its labels; when it cannot be read the review is
refused with podpatterns' reason, never injected without them.

Through the HTTP endpoint of a real `podpatterns serve --watch-namespaces --policy tests/policy/policy.yaml`
(its mandatory prod-logs rule injects log-shipper into Pods of Namespaces labelled env=prod), over TLS with the
recorded AdmissionReview, against the stand-in Kubernetes API (tests/kubeapi.py); then the cache's own side.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import pytest

from tests.helpers import Server
from tests.kubeapi import KubeApi
from tests.test_namespacecache import (
    INJECT,
    NAMESPACES,
    POLICY,
    eventually,
    injected,
    namespace,
    pod_in,
    server_env,
)
from webhook.cluster.namespacecache import Backoff, NamespaceCache
from webhook.core.engine import NamespaceInfo
from webhook.core.namespaces import NamespaceUnavailable, NotCached

TIMEOUT = 1.0  # --namespace-lookup-timeout-seconds of the servers below
REFUSED = ("the Pod is refused rather than created without the entries its Namespace or a policy rule may require; "
           "retry")


@pytest.fixture
def api():
    with KubeApi() as running:
        running.put(namespace({"env": "dev"}), f"{NAMESPACES}/dev")
        running.put(namespace({"env": "prod"}), f"{NAMESPACES}/prod")
        yield running


@pytest.fixture
def start(api, tmp_path):
    """Starts `podpatterns serve --watch-namespaces` on the stand-in (more flags as arguments); stops them all."""
    started: list[Server] = []

    def make(*flags: str, on: KubeApi | None = None) -> Server:
        workdir = tmp_path / f"server-{len(started)}"
        workdir.mkdir()
        server = Server(workdir, "--quiet", "--watch-namespaces", "--policy", POLICY, "--kube-version", "1.36",
                        "--namespace-lookup-timeout-seconds", f"{TIMEOUT:g}", *flags,
                        env=server_env(on or api, workdir))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def ready(server: Server) -> None:
    eventually(lambda: server.client.get("/readyz").status_code == 200, 10)


def gets(api: KubeApi, name: str) -> int:
    """The lookups of one Namespace that reached the API."""
    return len(api.requested("GET", f"{NAMESPACES}/{name}"))


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def refusal(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview response of a review that must be denied: HTTP 200, allowed false, no patch."""
    response = server.mutate(body)
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert answer["uid"] == body["request"]["uid"]
    assert answer["allowed"] is False and "patch" not in answer, answer
    return answer


def metric(server: Server, series: str) -> float:
    text = server.client.get("/metrics").text
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def log_lines(server: Server, message: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == message]


# --- a Namespace the cache has not seen yet


@pytest.mark.slow
def test_a_new_namespace_behind_a_held_watch_is_looked_up_once_cached_and_then_kept_fresh_by_the_watch(api, start):
    watch = api.fault("GET", NAMESPACES, watch=True, hold=True)  # the first watch sends nothing until released
    server = start()
    ready(server)
    eventually(lambda: api.watches(NAMESPACES))  # open, and held: no event reaches the cache
    api.put(namespace({"env": "prod"}), f"{NAMESPACES}/fresh")

    entries, first = timed(lambda: injected(server, pod_in("fresh")))
    assert entries == ["log-shipper"]  # decided with the looked-up labels
    assert gets(api, "fresh") == 1
    entries, second = timed(lambda: injected(server, pod_in("fresh")))
    assert entries == ["log-shipper"]
    assert gets(api, "fresh") == 1  # cached: the second review did not call the API
    assert metric(server, 'podpatterns_namespace_lookups_total{result="found"}') == 1
    [looked_up] = log_lines(server, "namespace looked up")
    assert looked_up["namespace"] == "fresh" and looked_up["cached"] is True
    print(f"miss + lookup {first * 1000:.1f} ms, hit {second * 1000:.1f} ms")

    # The watch comes back: it delivers fresh at the version already cached, then keeps it fresh.
    watch.release()
    api.put(namespace({"env": "dev"}), f"{NAMESPACES}/fresh")
    eventually(lambda: injected(server, pod_in("fresh")) == [], 10)
    api.put(namespace({"env": "prod"}, {INJECT: "json-log-adapter"}), f"{NAMESPACES}/fresh")
    eventually(lambda: injected(server, pod_in("fresh")) == ["json-log-adapter", "log-shipper"], 10)
    assert gets(api, "fresh") == 1
    assert len(api.lists(NAMESPACES)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["HTTP 500", "HTTP 403", "hanging", "unreachable"])
def test_a_namespace_that_cannot_be_read_is_denied_with_the_reason_and_others_are_still_served(api, start, fault):
    # Every watch breaks before its first event (a hold would be released by close()): fresh never arrives
    # through the watch.
    api.fault("GET", NAMESPACES, watch=True, drop_after=0, times=10**6)
    server = start()
    ready(server)
    eventually(lambda: api.watches(NAMESPACES))
    api.put(namespace({"env": "prod"}), f"{NAMESPACES}/fresh")
    reason = {"HTTP 500": "HTTP 500 Internal Server Error", "HTTP 403": "HTTP 403 Forbidden",
              "hanging": f"timeout after {TIMEOUT:g} s", "unreachable": "Connection refused"}[fault]
    if fault == "HTTP 500":
        api.fault("GET", f"{NAMESPACES}/fresh", status=500, message="etcdserver: request timed out")
    elif fault == "HTTP 403":
        api.fault("GET", f"{NAMESPACES}/fresh", status=403, reason="Forbidden",
                  message='namespaces "fresh" is forbidden: User cannot get resource "namespaces"')
    elif fault == "hanging":
        hang = api.fault("GET", f"{NAMESPACES}/fresh", hold=True)
    else:
        api.close()  # connections kept alive break, new ones are refused

    body = pod_in("fresh")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(timed, lambda: refusal(server, body))
        # Meanwhile a review for a cached Namespace is answered from the cache, at once.
        time.sleep(0.1)
        entries, other = timed(lambda: injected(server, pod_in("prod")))
        answer, took = waiting.result(10)
    assert entries == ["log-shipper"] and other < 0.5, other

    status = answer["status"]
    assert (status["code"], status["reason"]) == (503, "ServiceUnavailable")
    assert status["message"].startswith("podpatterns could not read Namespace fresh (") and reason in status["message"]
    assert status["message"].endswith(REFUSED)
    assert took < TIMEOUT + 0.5, took  # within the bound, whatever the API does
    if fault == "hanging":
        assert took >= TIMEOUT - 0.05, took
    [line] = log_lines(server, "denied: namespace unavailable")
    assert (line["uid"], line["namespace"], line["level"]) == (body["request"]["uid"], "fresh", "warning")
    assert reason in line["error"]
    assert metric(server, 'podpatterns_admission_requests_total{outcome="unavailable"}') == 1
    result = "timeout" if fault == "hanging" else "error"
    assert metric(server, f'podpatterns_namespace_lookups_total{{result="{result}"}}') == 1
    print(f"{fault}: denied after {took * 1000:.0f} ms; a cached review meanwhile took {other * 1000:.1f} ms")

    # The controller's retry: decided with the labels once the Namespace can be read.
    if fault == "hanging":
        # The lookup goes on after the review gave up (the client retries a GET that timed out) and caches
        # what it reads.
        hang.release()
        eventually(lambda: injected(server, pod_in("fresh")) == ["log-shipper"])
        calls = gets(api, "fresh")
        assert injected(server, pod_in("fresh")) == ["log-shipper"] and gets(api, "fresh") == calls
    elif fault != "unreachable":
        assert injected(server, pod_in("fresh")) == ["log-shipper"]
    else:
        refusal(server, pod_in("fresh"))  # still refused, never injected without the labels
        assert injected(server, pod_in("prod")) == ["log-shipper"]  # the cache still answers


@pytest.mark.slow
def test_a_namespace_that_does_not_exist_is_denied(api, start):
    server = start()
    ready(server)
    answer = refusal(server, pod_in("ghost"))
    assert answer["status"] == {"code": 404, "reason": "NotFound", "message": "Namespace ghost does not exist "
                                "(podpatterns read it from the API: HTTP 404 Not Found); the Pod is refused"}
    assert metric(server, 'podpatterns_namespace_lookups_total{result="not_found"}') == 1
    # Not cached: created now, the next review finds it.
    api.put(namespace({"env": "prod"}), f"{NAMESPACES}/ghost")
    assert injected(server, pod_in("ghost")) == ["log-shipper"]


@pytest.mark.slow
def test_with_unsynced_skip_an_unreadable_namespace_gets_a_503_whose_text_the_apiserver_shows(api, start):
    api.fault("GET", NAMESPACES, watch=True, hold=True)
    server = start("--unsynced-namespaces", "skip")
    ready(server)
    eventually(lambda: api.watches(NAMESPACES))
    api.put(namespace({"env": "prod"}), f"{NAMESPACES}/fresh")
    api.fault("GET", f"{NAMESPACES}/fresh", status=500)

    response = server.mutate(pod_in("fresh"))
    assert response.status_code == 503
    message = ("podpatterns could not read Namespace fresh (HTTP 500 Internal Server Error); the webhook's "
               "failurePolicy decides; retry")
    # A Kubernetes Status: the apiserver's client reads its message instead of its generic 503 text.
    assert response.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": message, "reason": "ServiceUnavailable", "code": 503, "error": message}
    assert metric(server, 'podpatterns_admission_requests_total{outcome="unavailable"}') == 1
    # A Namespace that does not exist is a decision, not an outage: denied in skip mode too.
    assert refusal(server, pod_in("ghost"))["status"]["code"] == 404
    assert injected(server, pod_in("fresh")) == ["log-shipper"]  # the retry, once it can be read


# --- before the first list


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_before_the_first_list_a_review_is_decided_with_the_looked_up_labels_or_refused_with_the_reason(
        api, start, mode):
    held = api.fault("GET", NAMESPACES, watch=False, hold=True)  # the list (only the first request)
    server = start("--unsynced-namespaces", mode)
    eventually(lambda: api.lists(NAMESPACES), 10)
    assert server.client.get("/readyz").status_code == 503  # the Service still sends it nothing

    assert injected(server, pod_in("prod")) == ["log-shipper"]  # looked up: decided with env=prod
    api.fault("GET", f"{NAMESPACES}/dev", status=500)
    message = "podpatterns has not listed the cluster's Namespaces yet and could not read Namespace dev (HTTP 500"
    if mode == "fail":
        assert refusal(server, pod_in("dev"))["status"]["message"].startswith(message)
    else:
        response = server.mutate(pod_in("dev"))
        assert response.status_code == 503 and response.json()["message"].startswith(message), response.text

    held.release()
    ready(server)
    calls = len(api.requests)
    assert injected(server, pod_in("dev")) == []  # env=dev: no log-shipper
    assert injected(server, pod_in("prod")) == ["log-shipper"]
    assert len(api.requests) == calls  # both from the cache now


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_an_api_unreachable_from_the_start_never_yields_an_injection_without_the_labels(tmp_path, start, mode):
    with KubeApi() as gone:
        pass  # closed: its port refuses connections
    server = start("--unsynced-namespaces", mode, on=gone)
    assert server.client.get("/readyz").status_code == 503
    body = pod_in("prod")
    response, took = timed(lambda: server.mutate(body))
    assert took < TIMEOUT + 0.5, took
    message = "podpatterns has not listed the cluster's Namespaces yet and could not read Namespace prod ("
    if mode == "fail":
        assert response.status_code == 200
        answer = response.json()["response"]
        assert answer["allowed"] is False and "patch" not in answer
        assert answer["status"]["message"].startswith(message) and answer["status"]["message"].endswith(REFUSED)
    else:
        assert response.status_code == 503
        assert response.json()["message"].startswith(message), response.text
    assert "Connection refused" in response.text


# --- the race of the issue: Pods created right after their Namespace


@pytest.mark.slow
@pytest.mark.parametrize("clients", [1, 8])
def test_pods_created_right_after_their_namespace_all_get_the_entry(api, start, clients):
    server = start()
    ready(server)
    eventually(lambda: api.watches(NAMESPACES))

    def create_then_review(i: int) -> list[str]:
        api.put(namespace({"env": "prod"}), f"{NAMESPACES}/race-{i}")
        return injected(server, pod_in(f"race-{i}"))

    with ThreadPoolExecutor(clients) as pool:
        entries = list(pool.map(create_then_review, range(50)))
    assert entries == [["log-shipper"]] * 50
    looked_up = sum(gets(api, f"race-{i}") for i in range(50))
    assert looked_up <= 50  # at most one lookup each; the others came from the watch
    print(f"{clients} client(s): {looked_up} of 50 reviews came before the watch's ADDED event and were looked up")


@pytest.mark.slow
def test_pods_created_right_after_their_namespace_behind_a_slow_watch_all_get_the_entry(api, start):
    watch = api.fault("GET", NAMESPACES, watch=True, hold=True)
    server = start()
    ready(server)
    eventually(lambda: api.watches(NAMESPACES))
    entries = []
    for i in range(50):
        api.put(namespace({"env": "prod"}), f"{NAMESPACES}/race-{i}")
        entries.append(injected(server, pod_in(f"race-{i}")))
    assert entries == [["log-shipper"]] * 50
    assert [gets(api, f"race-{i}") for i in range(50)] == [1] * 50  # every one looked up, once
    watch.release()
    api.put(namespace({"env": "dev"}), f"{NAMESPACES}/race-0")  # after all 50 ADDED events
    eventually(lambda: injected(server, pod_in("race-0")) == [], 10)
    assert [injected(server, pod_in(f"race-{i}")) for i in range(1, 50)] == [["log-shipper"]] * 49
    assert sum(gets(api, f"race-{i}") for i in range(50)) == 50  # no lookup once the watch delivered them


# --- the cache's side


@pytest.fixture
def cache(api):
    made = NamespaceCache(api.client(), lookup_timeout=TIMEOUT, backoff=Backoff(initial=0.05, cap=0.2))
    made.start()
    assert made.wait_synced(5)
    eventually(lambda: api.watches(NAMESPACES))
    yield made
    made.stop()


def miss(cache: NamespaceCache, name: str) -> NotCached:
    with pytest.raises(NotCached) as raised:
        cache.lookup(name)
    return raised.value


def test_concurrent_misses_of_one_namespace_share_one_lookup(api):
    api.fault("GET", NAMESPACES, watch=True, hold=True)  # the watch delivers nothing
    blind = NamespaceCache(api.client(), lookup_timeout=TIMEOUT)
    blind.start()
    try:
        assert blind.wait_synced(5)
        api.put(namespace({"env": "prod"}), f"{NAMESPACES}/shared")
        held = api.fault("GET", f"{NAMESPACES}/shared", hold=True)
        misses = [miss(blind, "shared") for _ in range(5)]
        eventually(lambda: gets(api, "shared") == 1)  # the one lookup, held
        assert len({id(m.pending) for m in misses}) == 1 and not misses[0].pending.done()
        held.release()
        assert misses[0].pending.result(5) == NamespaceInfo("shared", {"env": "prod"}, {})
        assert blind.lookup("shared").labels == {"env": "prod"}  # cached
        assert gets(api, "shared") == 1
    finally:
        blind.stop()


def test_a_looked_up_copy_never_replaces_a_newer_one_from_the_watch_nor_brings_back_a_deleted_namespace(api, cache):
    api.put(namespace({"v": "1"}), f"{NAMESPACES}/moving")
    old_version = api.get(f"{NAMESPACES}/moving")["metadata"]["resourceVersion"]
    api.put(namespace({"v": "2"}), f"{NAMESPACES}/moving")
    eventually(lambda: cache._snapshot.get("moving") == NamespaceInfo("moving", {"v": "2"}, {}))
    # A lookup that read the older version and is only now done: the watch's newer copy stays.
    assert cache._remember(NamespaceInfo("moving", {"v": "1"}, {}), old_version) is False
    assert cache.lookup("moving").labels == {"v": "2"}
    # A lookup that read it before its deletion: the deletion stays.
    before = api.get(f"{NAMESPACES}/moving")["metadata"]["resourceVersion"]
    api.delete(f"{NAMESPACES}/moving")
    eventually(lambda: "moving" not in cache._snapshot)
    assert cache._remember(NamespaceInfo("moving", {"v": "2"}, {}), before) is False
    with pytest.raises(NamespaceUnavailable):  # the miss reads the API again: gone
        miss(cache, "moving").pending.result(5)


def test_a_watch_event_older_than_a_looked_up_copy_leaves_it(api, cache):
    newer = str(int(api.revision) + 10)
    assert cache._remember(NamespaceInfo("ahead", {"v": "new"}, {}), newer) is True
    api.put(namespace({"v": "old"}), f"{NAMESPACES}/ahead")  # an event at an older version than the copy
    api.put(namespace(), f"{NAMESPACES}/marker")
    eventually(lambda: "marker" in cache._snapshot)
    assert cache.lookup("ahead").labels == {"v": "new"}


def test_a_name_no_namespace_can_have_is_refused_without_a_call(api, cache):
    calls = len(api.requests)
    for name in ("", "Prod", "a/b", "../secrets", "x" * 64):
        with pytest.raises(NamespaceUnavailable) as refused:
            cache.lookup(name)
        assert refused.value.code == 400
    assert len(api.requests) == calls
