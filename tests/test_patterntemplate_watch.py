"""The cluster's PatternTemplates in the served catalogue, through `podpatterns serve --watch-patterntemplates` and the
stand-in API (tests/kubeapi.py) with the real `kubernetes` client: an object added, changed, broken, repaired and
deleted, each seen in what a review gets; the precedence over --catalog directories and built-ins; a policy the
objects break; 410 Gone, a dropped or garbled watch; a cluster without the CRD. Their status:
tests/test_patterntemplate_status.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Server,
    apply,
    assert_valid_pod,
    ops_of,
    podpatterns_command,
    review_with,
)
from tests.kubeapi import KubeApi
from tests.test_namespacecache import eventually

pytestmark = pytest.mark.slow

TEMPLATES = "/apis/podpatterns.io/v1alpha1/patterntemplates"
FAILURES = 'podpatterns_config_reloads_total{result="failure"}'
LAST_OK = "podpatterns_config_last_reload_success"
BROKEN_TYPE = "spec.parameters[0]: parameter level: type 'str' is not one of string, integer, boolean, path, hostPort, quantity"


def template(name: str = "tracer", image: str = "registry.example/tracer:1.0", level_type: str = "string",
             lifecycle: str = "regular") -> dict[str, Any]:
    """A PatternTemplate object as `kubectl apply` stores it (the same document a --catalog file holds)."""
    return {"apiVersion": "podpatterns.io/v1alpha1", "kind": "PatternTemplate", "metadata": {"name": name},
            "spec": {"pattern": "sidecar", "description": "Ships the app's traces (a stand-in image, never pulled).",
                     "lifecycle": lifecycle,
                     "parameters": [{"name": "level", "type": level_type, "default": "info"}],
                     "containers": [{"name": name, "image": image, "args": ["--level=${params.level}"]}]}}


def template_file(name: str, image: str) -> str:
    """The same entry as a --catalog file."""
    return json.dumps(template(name, image))  # JSON is YAML


def serve(api: KubeApi, workdir: Path, *flags: str, ready: bool = True) -> Server:
    """`podpatterns serve --watch-patterntemplates` on the stand-in, once ready (unless `ready` is False)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}  # CI may itself run in a Pod
    env["KUBECONFIG"] = str(api.kubeconfig(workdir / "kubeconfig"))
    server = Server(workdir, "--quiet", "--watch-patterntemplates", "--kube-version", "1.36", "--drain-seconds", "0",
                    "--reload-seconds", "0.2", *flags, env=env)
    if ready:
        eventually(lambda: server.client.get("/readyz").status_code == 200, 15)
    return server


def answer(server: Server, entry: str) -> dict[str, Any]:
    """What a Pod asking for `entry` gets: the admission response."""
    response = server.mutate(review_with({"podpatterns.io/inject": entry}))
    assert response.status_code == 200, response.text
    return response.json()["response"]


def injected(server: Server, entry: str) -> tuple[str, str] | None:
    """(the image of the container `entry` injects, the digest the Pod's status annotation records), or None when
    the Pod is refused because the catalogue has no such entry."""
    body = review_with({"podpatterns.io/inject": entry})
    got = answer(server, entry)
    if not got["allowed"]:
        assert f"names unknown entry '{entry}'" in got["status"]["message"], got
        return None
    pod = apply(body["request"]["object"], ops_of(got))
    assert_valid_pod(pod)
    [record] = [r for r in json.loads(pod["metadata"]["annotations"]["podpatterns.io/status"]) if r["entry"] == entry]
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    return next(c["image"] for c in containers if c["name"] == entry), record["digest"]


def image_of(server: Server, entry: str) -> str | None:
    found = injected(server, entry)
    return found[0] if found else None


def metric(server: Server, sample: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} is not in /metrics")


def ready_condition(api: KubeApi, name: str) -> dict[str, Any]:
    """The Ready condition the server wrote to the object's status ({} while there is none)."""
    [condition] = ((api.get(f"{TEMPLATES}/{name}") or {}).get("status") or {}).get("conditions") or [{}]
    return condition


def logged(server: Server, message: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == message]


def test_an_object_is_served_once_applied_and_follows_every_change_to_its_deletion(tmp_path):
    with KubeApi() as api:
        server = serve(api, tmp_path)
        try:
            assert injected(server, "tracer") is None  # no such entry yet: the Pod is refused

            api.put(template(), f"{TEMPLATES}/tracer")  # kubectl apply
            first = eventually(lambda: injected(server, "tracer"))
            assert first[0] == "registry.example/tracer:1.0"
            eventually(lambda: ready_condition(api, "tracer").get("reason") == "Served")
            assert api.get(f"{TEMPLATES}/tracer")["status"]["digest"] == first[1]  # the digest Pods carry

            api.put(template(image="registry.example/tracer:2.0"), f"{TEMPLATES}/tracer")
            second = eventually(lambda: (found := injected(server, "tracer"))[0].endswith(":2.0") and found)
            assert second[1] != first[1]
            eventually(lambda: api.get(f"{TEMPLATES}/tracer")["status"]["digest"] == second[1])

            # Broken (as only an apply that went round the validating webhook can be): the last good one stays.
            api.put(template(image="registry.example/tracer:3.0", level_type="str"), f"{TEMPLATES}/tracer")
            eventually(lambda: metric(server, FAILURES) == 1)
            assert injected(server, "tracer") == second and metric(server, LAST_OK) == 0
            condition = eventually(lambda: (c := ready_condition(api, "tracer")).get("status") == "False" and c)
            assert condition["reason"] == "Invalid" and BROKEN_TYPE in condition["message"], condition
            assert condition["message"].startswith("patterntemplate/tracer:")  # with the line in the object
            assert api.get(f"{TEMPLATES}/tracer")["status"]["digest"] == second[1]  # what Pods still get
            [refused] = logged(server, "reload refused: the catalogue does not load; serving the last good configuration")
            assert refused["problems"] == [condition["message"]]

            api.put(template(image="registry.example/tracer:3.0"), f"{TEMPLATES}/tracer")  # repaired
            eventually(lambda: image_of(server, "tracer") == "registry.example/tracer:3.0")
            assert metric(server, LAST_OK) == 1
            eventually(lambda: ready_condition(api, "tracer").get("reason") == "Served")

            api.delete(f"{TEMPLATES}/tracer")
            eventually(lambda: injected(server, "tracer") is None)
            assert metric(server, FAILURES) == 1
        finally:
            server.stop()


def test_an_object_overrides_a_directory_entry_and_a_built_in_of_its_name(tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "tracer.yaml").write_text(template_file("tracer", "registry.example/tracer:from-directory"))
    builtin = "cr.fluentbit.io/fluent/fluent-bit:3.2.10"
    with KubeApi() as api:
        server = serve(api, tmp_path, "--catalog", str(catalog))
        try:
            assert image_of(server, "tracer") == "registry.example/tracer:from-directory"
            assert image_of(server, "log-shipper") == builtin

            api.put(template("tracer", "registry.example/tracer:from-object"), f"{TEMPLATES}/tracer")
            api.put(template("log-shipper", "registry.example/shipper:from-object"), f"{TEMPLATES}/log-shipper")
            eventually(lambda: image_of(server, "tracer") == "registry.example/tracer:from-object")
            eventually(lambda: image_of(server, "log-shipper") == "registry.example/shipper:from-object")
            eventually(lambda: api.get(f"{TEMPLATES}/log-shipper").get("status", {}).get("origin") == "patterntemplate/log-shipper:1")

            # Deleted, the object gives way to what it overrode.
            api.delete(f"{TEMPLATES}/tracer")
            api.delete(f"{TEMPLATES}/log-shipper")
            eventually(lambda: image_of(server, "tracer") == "registry.example/tracer:from-directory")
            eventually(lambda: image_of(server, "log-shipper") == builtin)
        finally:
            server.stop()


POLICY = """\
apiVersion: podpatterns.io/v1alpha1
kind: Policy
spec:
  rules:
  - name: trace-everything
    inject: [tracer]
"""


def test_a_policy_may_name_an_object_and_objects_that_break_it_are_refused_together(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with KubeApi() as api:
        api.put(template(), f"{TEMPLATES}/tracer")
        api.put(template("other", "registry.example/other:1.0"), f"{TEMPLATES}/other")
        # The policy names tracer, which only the cluster has: serve reads the objects before it checks the policy.
        server = serve(api, tmp_path, "--policy", str(policy))
        try:
            assert image_of(server, "tracer") == "registry.example/tracer:1.0"
            served_other = injected(server, "other")
            eventually(lambda: ready_condition(api, "other").get("reason") == "Served")

            # Deleting tracer breaks the policy, which names it; other changes at the same moment.
            api.delete(f"{TEMPLATES}/tracer")
            api.put(template("other", "registry.example/other:2.0"), f"{TEMPLATES}/other")
            eventually(lambda: metric(server, FAILURES) >= 1)
            condition = eventually(lambda: (c := ready_condition(api, "other")).get("reason") == "NotServed" and c)
            assert condition["status"] == "False"
            assert "the policy does not load" in condition["message"]
            assert f"{policy}:6: inject: no catalogue entry 'tracer'" in condition["message"]
            assert f"this entry's previous spec ({served_other[1]}) is served" in condition["message"]
            assert injected(server, "other") == served_other
            assert image_of(server, "tracer") == "registry.example/tracer:1.0"  # the last good catalogue, whole

            api.put(template(), f"{TEMPLATES}/tracer")  # back: both load, other's new spec is served
            eventually(lambda: image_of(server, "other") == "registry.example/other:2.0")
            eventually(lambda: ready_condition(api, "other").get("reason") == "Served")
        finally:
            server.stop()


# --- the watch's faults, and a cluster without the CRD


def test_not_ready_until_the_first_list_while_the_files_are_served(tmp_path):
    with KubeApi() as api:
        api.put(template(), f"{TEMPLATES}/tracer")
        api.fault("GET", TEMPLATES, watch=False, status=500)  # the read at start: serve starts with the files
        held = api.fault("GET", TEMPLATES, watch=False, hold=True)  # the watch's first list
        server = serve(api, tmp_path, ready=False)
        try:
            eventually(lambda: len(api.lists(TEMPLATES)) == 2)
            assert server.client.get("/readyz").status_code == 503
            assert server.client.get("/healthz").status_code == 200
            assert image_of(server, "log-shipper") == "cr.fluentbit.io/fluent/fluent-bit:3.2.10"
            assert injected(server, "tracer") is None
            held.release()
            eventually(lambda: server.client.get("/readyz").status_code == 200)
            assert image_of(server, "tracer") == "registry.example/tracer:1.0"  # ready means built with the objects
        finally:
            server.stop()
        assert logged(server, "patterntemplates not read at start; serving the built-in and --catalog entries until "
                              "the watch reads them")


@pytest.mark.parametrize("fault", [{"drop_after": 1}, {"drop_after": 0}, {"garbage": True}],
                         ids=["dropped mid-event", "dropped before any event", "a line that is not JSON"])
def test_a_broken_watch_resumes_from_where_it_was_without_a_relist(tmp_path, fault):
    with KubeApi() as api:
        api.fault("GET", TEMPLATES, watch=True, **fault)
        server = serve(api, tmp_path)
        try:
            api.put(template("first", "registry.example/first:1.0"), f"{TEMPLATES}/first")
            eventually(lambda: image_of(server, "first") == "registry.example/first:1.0")
            api.put(template("second", "registry.example/second:1.0"), f"{TEMPLATES}/second")
            eventually(lambda: image_of(server, "second") == "registry.example/second:1.0")
        finally:
            server.stop()
        first, resumed = api.watches(TEMPLATES)[:2]
        assert len(api.lists(TEMPLATES)) == 2  # the read at start and the watch's list: no relist
        if fault.get("drop_after") == 1:  # from the event it had, past the list's resourceVersion
            assert int(resumed.parameter("resourceVersion")) > int(first.parameter("resourceVersion"))
        else:
            assert resumed.parameter("resourceVersion") == first.parameter("resourceVersion")
        assert logged(server, "patterntemplate list/watch failed; retrying")


def test_410_gone_relists_and_serves_what_changed_meanwhile(tmp_path):
    with KubeApi() as api:
        api.put(template("kept", "registry.example/kept:1.0"), f"{TEMPLATES}/kept")
        api.put(template("deleted", "registry.example/deleted:1.0"), f"{TEMPLATES}/deleted")
        api.fault("GET", TEMPLATES, watch=True, drop_after=0)  # the first watch breaks at once…
        resume = api.fault("GET", TEMPLATES, watch=True, hold=True)  # …and its resumption waits for the compaction
        server = serve(api, tmp_path)
        try:
            eventually(lambda: len(api.watches(TEMPLATES)) == 2)
            api.delete(f"{TEMPLATES}/deleted")
            api.put(template("kept", "registry.example/kept:2.0"), f"{TEMPLATES}/kept")
            api.compact()
            resume.release()  # 410 Gone: the history it would resume from is gone
            eventually(lambda: len(api.lists(TEMPLATES)) == 3)
            eventually(lambda: image_of(server, "kept") == "registry.example/kept:2.0")
            eventually(lambda: injected(server, "deleted") is None)
            api.put(template("later", "registry.example/later:1.0"), f"{TEMPLATES}/later")  # the watch goes on
            eventually(lambda: image_of(server, "later") == "registry.example/later:1.0")
        finally:
            server.stop()
        assert logged(server, "patterntemplate watch expired (410 Gone); relisting")
        assert logged(server, "patterntemplates relisted")


def test_without_the_crd_the_files_are_served_and_the_objects_once_it_is_installed(tmp_path):
    absent = {"status": 404, "reason": "NotFound", "message": "the server could not find the requested resource"}
    with KubeApi() as api:
        api.fault("GET", TEMPLATES, watch=False, times=4, **absent)  # at start, then three lists
        server = serve(api, tmp_path)  # ready: the cluster answered, it has no PatternTemplates
        try:
            assert image_of(server, "log-shipper") == "cr.fluentbit.io/fluent/fluent-bit:3.2.10"
            api.put(template(), f"{TEMPLATES}/tracer")  # the CRD is installed, and an object applied
            eventually(lambda: image_of(server, "tracer") == "registry.example/tracer:1.0", 15)
        finally:
            server.stop()
        assert [r.status for r in api.lists(TEMPLATES)] == [404, 404, 404, 404, 200]
        [warning] = logged(server, "patterntemplates are not served by the API (is the CustomResourceDefinition "
                                   "installed?); serving the built-in and --catalog entries; asking again")
        assert warning["level"] == "warning" and warning["crd"] == "patterntemplates.podpatterns.io"
        assert logged(server, "patterntemplates are served again: watching them")


def test_serve_refuses_the_watch_without_a_cluster(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(tmp_path / "missing")
    done = subprocess.run([*podpatterns_command(), "serve", "--quiet", "--watch-patterntemplates"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--watch-patterntemplates needs the Kubernetes API, and there is no configuration for it" in done.stderr
