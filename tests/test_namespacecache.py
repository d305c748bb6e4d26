"""The Namespace cache: list+watch with the real `kubernetes` client against the stand-in API (tests/kubeapi.py),
which streams watch events, expires and drops watches, and fails or holds lists on demand; then the same
through `podpatterns serve --watch-namespaces`. The lookup of a Namespace the cache has not seen:
tests/test_namespace_lookup.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Callable

import pytest

from tests.helpers import (
    Server,
    apply,
    assert_valid_pod,
    ops_of,
    podpatterns_command,
    review,
)
from tests.kubeapi import KubeApi
from webhook.cluster.namespacecache import Backoff, NamespaceCache
from webhook.core.engine import NamespaceInfo
from webhook.core.namespaces import NamespaceUnavailable, NotCached

NAMESPACES = "/api/v1/namespaces"
POLICY = os.path.join(os.path.dirname(__file__), "policy", "policy.yaml")
INJECT = "podpatterns.io/inject"


def namespace(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"labels": labels or {}, "annotations": annotations or {}}}


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Polls until `check()` is truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"not true within {timeout} s"
            return result
        time.sleep(0.02)


def revision_of(api: KubeApi, name: str) -> str:
    return api.get(f"{NAMESPACES}/{name}")["metadata"]["resourceVersion"]


def cached(cache: NamespaceCache, name: str) -> NamespaceInfo | None:
    """What the cache holds for `name`, without starting a lookup."""
    return cache._snapshot.get(name)


def looked_up(cache: NamespaceCache, name: str, timeout: float = 5.0) -> NamespaceInfo:
    """A lookup of a Namespace the cache does not hold, as the server waits for it."""
    with pytest.raises(NotCached) as miss:
        cache.lookup(name)
    assert miss.value.name == name
    return miss.value.pending.result(timeout)


@pytest.fixture
def api():
    with KubeApi() as running:
        running.put(namespace({"env": "dev"}, {INJECT: "json-log-adapter"}), f"{NAMESPACES}/dev")
        running.put(namespace({"env": "prod"}), f"{NAMESPACES}/prod")
        yield running


@pytest.fixture
def caches(api):
    """Makes started caches on the stand-in (fast backoff) and stops them all at the end."""
    made: list[NamespaceCache] = []

    def make(watch_seconds: int = 300, backoff: Backoff | None = None, lookup_timeout: float = 2.0) -> NamespaceCache:
        cache = NamespaceCache(api.client(), lookup_timeout=lookup_timeout, watch_seconds=watch_seconds,
                               backoff=backoff or Backoff(initial=0.05, cap=0.2))
        made.append(cache)
        cache.start()
        return cache

    yield make
    for cache in made:
        cache.stop()


def synced(cache: NamespaceCache) -> NamespaceCache:
    assert cache.wait_synced(5), "the cache did not sync"
    return cache


def test_the_first_list_fills_the_cache_then_a_watch_continues_from_its_version(api, caches, caplog):
    with caplog.at_level("INFO", logger="podpatterns"):
        cache = synced(caches())
    assert cache.synced
    assert cache.lookup("dev") == NamespaceInfo("dev", {"env": "dev"}, {INJECT: "json-log-adapter"})
    assert cache.lookup("prod") == NamespaceInfo("prod", {"env": "prod"}, {})
    # Unknown once synced: read from the API, never taken for a Namespace without labels.
    with pytest.raises(NamespaceUnavailable) as missing:
        looked_up(cache, "nowhere")
    assert (missing.value.code, missing.value.reason) == (404, "HTTP 404 Not Found")
    assert "nowhere" not in cache._snapshot  # not found is not cached

    [listed] = api.lists(NAMESPACES)
    [watch] = eventually(lambda: api.watches(NAMESPACES))
    assert watch.parameter("resourceVersion") == str(api.revision)  # the list's
    assert watch.parameter("allowWatchBookmarks") == "true"
    assert watch.parameter("timeoutSeconds") == "300"
    [record] = [r for r in caplog.records if r.getMessage() == "namespaces listed"]
    assert record.fields == {"namespaces": 2, "resource_version": str(api.revision)}
    assert "json-log-adapter" not in caplog.text  # no annotation values in the logs


def test_added_modified_and_deleted_namespaces_are_reflected(api, caches):
    cache = synced(caches())
    eventually(lambda: api.watches(NAMESPACES))
    before = cache._snapshot

    api.put(namespace({"team": "shop"}), f"{NAMESPACES}/shop")
    eventually(lambda: cached(cache, "shop") and cache.lookup("shop").labels == {"team": "shop"})
    api.put(namespace({"env": "prod"}, {INJECT: "log-shipper"}), f"{NAMESPACES}/shop")
    eventually(lambda: cached(cache, "shop") == NamespaceInfo("shop", {"env": "prod"}, {INJECT: "log-shipper"}))
    api.delete(f"{NAMESPACES}/dev")
    eventually(lambda: cached(cache, "dev") is None)

    # Each event replaced the snapshot: one a request held on to never changed under it.
    assert sorted(before) == ["dev", "prod"] and before["dev"].labels == {"env": "dev"}
    assert len(api.lists(NAMESPACES)) == 1 and len(api.watches(NAMESPACES)) == 1


def test_a_connection_dropped_mid_event_resumes_from_the_last_version_without_a_relist(api, caches, caplog):
    api.fault("GET", NAMESPACES, watch=True, drop_after=1)  # the first watch breaks instead of its second event
    cache = synced(caches())
    eventually(lambda: api.watches(NAMESPACES))

    with caplog.at_level("WARNING", logger="podpatterns"):
        api.put(namespace({"n": "1"}), f"{NAMESPACES}/first")
        api.put(namespace({"n": "2"}), f"{NAMESPACES}/second")  # in flight when the connection breaks
        eventually(lambda: cached(cache, "second") and cache.lookup("second").labels == {"n": "2"})

    assert cache.lookup("first").labels == {"n": "1"}
    first, resumed = api.watches(NAMESPACES)
    assert resumed.parameter("resourceVersion") == revision_of(api, "first")
    assert len(api.lists(NAMESPACES)) == 1
    [failure] = [r for r in caplog.records if r.getMessage() == "namespace list/watch failed; retrying"]
    assert failure.fields["error"].startswith("ProtocolError")
    assert failure.fields["resource_version"] == revision_of(api, "first")


@pytest.mark.parametrize("fault", [
    {"status": 500, "message": "etcdserver: leader changed"},
    {"garbage": True},
    {"drop_after": 0},
    {"end_at_once": True},
], ids=["HTTP 500", "a line that is not JSON", "dropped before any event", "ended at once, cleanly"])
def test_a_failing_watch_is_retried_from_the_same_version(api, caches, fault):
    api.fault("GET", NAMESPACES, watch=True, **fault)
    cache = synced(caches())
    first, second = eventually(lambda: api.watches(NAMESPACES)[:2] if len(api.watches(NAMESPACES)) >= 2 else None)
    assert first.parameter("resourceVersion") == second.parameter("resourceVersion") == "102"
    assert second.at - first.at >= 0.05  # after the backoff
    api.put(namespace({"n": "1"}), f"{NAMESPACES}/later")
    eventually(lambda: cached(cache, "later") and cache.lookup("later").labels == {"n": "1"})
    assert len(api.lists(NAMESPACES)) == 1


def test_a_bookmark_moves_the_version_a_watch_resumes_from(api, caches):
    api.fault("GET", NAMESPACES, watch=True, drop_after=1)
    cache = synced(caches())
    eventually(lambda: api.watches(NAMESPACES))
    api.put({"type": "Opaque"}, "/api/v1/namespaces/dev/secrets/unrelated")  # moves the revision, not the watch
    api.bookmark(NAMESPACES, "Namespace")
    marked = str(api.revision)
    api.put(namespace(), f"{NAMESPACES}/after-bookmark")  # breaks the connection
    eventually(lambda: len(api.watches(NAMESPACES)) == 2)
    assert api.watches(NAMESPACES)[1].parameter("resourceVersion") == marked == "103"
    eventually(lambda: "after-bookmark" in cache._snapshot)


@pytest.mark.parametrize("gone", [
    {},  # the compaction itself: 200 and an ERROR event with a 410 Status, as the real API answers
    {"gone_event": True},
    {"status": 410, "reason": "Expired", "message": "too old resource version"},
], ids=["compacted (ERROR event)", "ERROR event fault", "HTTP 410"])
def test_410_gone_relists_and_drops_what_was_deleted_meanwhile(api, caches, caplog, gone):
    api.fault("GET", NAMESPACES, watch=True, drop_after=1)
    resume = api.fault("GET", NAMESPACES, watch=True, hold=True, **gone)  # held until the history is compacted
    cache = synced(caches())
    eventually(lambda: api.watches(NAMESPACES))

    with caplog.at_level("INFO", logger="podpatterns"):
        api.put(namespace({"n": "1"}), f"{NAMESPACES}/kept")
        eventually(lambda: "kept" in cache._snapshot)
        api.delete(f"{NAMESPACES}/dev")  # in flight when the connection breaks: never delivered as an event
        eventually(lambda: len(api.watches(NAMESPACES)) == 2)
        api.put(namespace({"env": "prod"}, {INJECT: "log-shipper"}), f"{NAMESPACES}/prod")  # changed meanwhile
        api.compact()
        resume.release()
        eventually(lambda: len(api.lists(NAMESPACES)) == 2)
        eventually(lambda: cached(cache, "dev") is None)

    assert cache.lookup("prod").annotations == {INJECT: "log-shipper"}
    assert cache.lookup("kept").labels == {"n": "1"}
    relisted_at = str(api.revision)
    third = eventually(lambda: api.watches(NAMESPACES)[2:])[0]
    assert third.parameter("resourceVersion") == relisted_at
    api.put(namespace({"n": "2"}), f"{NAMESPACES}/kept")
    eventually(lambda: cache.lookup("kept").labels == {"n": "2"})
    messages = [r.getMessage() for r in caplog.records]
    assert "namespace watch expired (410 Gone); relisting" in messages and "namespaces relisted" in messages


def test_list_failures_back_off_exponentially_up_to_the_cap_then_sync(api, caches, caplog):
    api.fault("GET", NAMESPACES, watch=False, times=4, status=500)
    with caplog.at_level("WARNING", logger="podpatterns"):
        cache = synced(caches(backoff=Backoff(initial=0.05, cap=0.2)))
    lists = api.lists(NAMESPACES)
    assert [r.status for r in lists] == [500, 500, 500, 500, 200]
    waits = [r.fields["retry_in"] for r in caplog.records if r.getMessage() == "namespace list/watch failed; retrying"]
    assert waits == [0.05, 0.1, 0.2, 0.2]
    gaps = [later.at - earlier.at for earlier, later in zip(lists, lists[1:])]
    assert all(gap >= wait * 0.9 for gap, wait in zip(gaps, waits)), gaps
    assert cache.lookup("dev").labels == {"env": "dev"}
    # A list alone is not progress (a list that works and a watch that never does must still back off);
    # the first event is, and the next failure waits the initial time again.
    assert cache.backoff.failures == 4
    api.put(namespace(), f"{NAMESPACES}/progress")
    eventually(lambda: cache.backoff.failures == 0)


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff()
    assert [backoff.next() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next() == 0.5
    backoff.reset()
    assert [backoff.next(first_free=True), backoff.next(first_free=True)] == [0.0, 1.0]


def test_lookups_before_the_first_list_read_the_namespace_and_the_list_keeps_it(api, caches):
    held = api.fault("GET", NAMESPACES, watch=False, times=1, hold=True)  # the list only, not a get
    cache = caches()
    eventually(lambda: api.lists(NAMESPACES))  # the list has arrived and is held
    assert not cache.synced
    with pytest.raises(NotCached) as miss:
        cache.lookup("dev")
    assert miss.value.synced is False and miss.value.timeout == 2.0
    assert miss.value.pending.result(5) == NamespaceInfo("dev", {"env": "dev"}, {INJECT: "json-log-adapter"})
    assert cache.lookup("dev").labels == {"env": "dev"}  # cached: no second get
    assert len(api.requested("GET", f"{NAMESPACES}/dev")) == 1
    held.release()
    synced(cache)
    assert cache.lookup("dev").labels == {"env": "dev"} and cache.lookup("prod").labels == {"env": "prod"}


def test_a_lookup_timeout_that_is_not_positive_is_refused(api):
    with pytest.raises(ValueError, match="lookup_timeout must be more than 0"):
        NamespaceCache(api.client(), lookup_timeout=0)


def test_the_server_ending_a_watch_renews_it_from_the_same_version(api, caches):
    caches(watch_seconds=1)
    first, second = eventually(lambda: api.watches(NAMESPACES)[:2] if len(api.watches(NAMESPACES)) >= 2 else None, 5)
    assert second.at - first.at < 1.5  # no backoff after a normal end
    assert first.parameter("resourceVersion") == second.parameter("resourceVersion")
    assert len(api.lists(NAMESPACES)) == 1


@pytest.mark.parametrize("where", ["in a watch", "in a backoff"])
def test_stop_ends_the_thread_promptly(api, caches, where):
    if where == "in a backoff":
        api.fault("GET", NAMESPACES, watch=False, status=500)
        cache = caches(backoff=Backoff(initial=30, cap=30))
        eventually(lambda: api.lists(NAMESPACES))
    else:
        cache = synced(caches())
        eventually(lambda: api.watches(NAMESPACES))
    started = time.monotonic()
    cache.stop()
    assert time.monotonic() - started < 1.0
    assert not cache._thread.is_alive()


# --- through `podpatterns serve --watch-namespaces`


def server_env(api: KubeApi, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}  # CI may itself run in a Pod
    env["KUBECONFIG"] = str(api.kubeconfig(tmp_path / "kubeconfig"))
    return env


def pod_in(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body = review("pod-create-annotated")
    body["request"]["namespace"] = name
    body["request"]["object"]["metadata"].update(namespace=name, annotations=annotations or {})
    return body


def injected(server: Server, body: dict[str, Any]) -> list[str]:
    """The entries a review got, from the status annotation of the patched (and valid) Pod."""
    response = server.mutate(body)
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert answer["allowed"] is True, answer
    if "patch" not in answer:
        return []
    pod = apply(body["request"]["object"], ops_of(answer))
    assert_valid_pod(pod)
    return [record["entry"] for record in json.loads(pod["metadata"]["annotations"]["podpatterns.io/status"])]


@pytest.mark.slow
def test_serve_is_not_ready_until_the_first_list_then_follows_namespace_changes(tmp_path):
    with KubeApi() as api:
        api.put(namespace(annotations={INJECT: "json-log-adapter"}), f"{NAMESPACES}/shop")
        held = api.fault("GET", NAMESPACES, watch=False, hold=True)
        server = Server(tmp_path, "--quiet", "--watch-namespaces", "--policy", POLICY, env=server_env(api, tmp_path))
        try:
            eventually(lambda: api.lists(NAMESPACES), 10)
            assert server.client.get("/readyz").status_code == 503
            assert server.client.get("/healthz").status_code == 200  # alive, only not ready
            # A review that still arrives reads its Namespace from the API: decided with its default.
            assert injected(server, pod_in("shop")) == ["json-log-adapter"]
            assert len(api.requested("GET", f"{NAMESPACES}/shop")) == 1

            held.release()
            eventually(lambda: server.client.get("/readyz").status_code == 200, 10)
            eventually(lambda: api.watches(NAMESPACES))  # opened right after the list
            calls = len(api.requests)
            assert injected(server, pod_in("shop")) == ["json-log-adapter"]  # the Namespace's default
            assert injected(server, pod_in("shop", {"podpatterns.io/exclude": "json-log-adapter"})) == []
            assert len(api.requests) == calls  # no API call on the request path

            # The namespace becomes prod: the policy's mandatory prod-logs rule now applies to new Pods.
            api.put(namespace({"env": "prod"}, {INJECT: "json-log-adapter"}), f"{NAMESPACES}/shop")
            eventually(lambda: injected(server, pod_in("shop")) == ["json-log-adapter", "log-shipper"], 10)
            assert len(api.lists(NAMESPACES)) == 1
            assert '"message":"namespaces listed"' in server.output()
        finally:
            server.stop()


@pytest.mark.parametrize(("flags", "kubeconfig", "message"), [
    (["--watch-namespaces", "--namespaces-file", "ns.yaml"], True,
     "--watch-namespaces and --namespaces-file exclude each other"),
    (["--watch-namespaces"], False, "--watch-namespaces needs the Kubernetes API, and there is no configuration for it"),
], ids=["with --namespaces-file", "without a cluster"])
def test_serve_refuses_watch_namespaces_without_a_cluster_or_with_a_file(tmp_path, flags, kubeconfig, message):
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(tmp_path / ("kubeconfig" if kubeconfig else "missing"))
    done = subprocess.run([*podpatterns_command(), "serve", "--quiet", *flags], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr
