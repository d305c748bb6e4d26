"""The status `podpatterns serve --watch-patterntemplates` writes to each PatternTemplate, read as `kubectl get` and
`kubectl describe` read it (the official client, the status subresource of the stand-in API): valid for the CRD's
schema, read back as written, Ready with its reasons, the effective lifecycle, written only when it changes — so a
rebuild that changes nothing, or a second replica, writes nothing."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import jsonschema
import pytest
from kubernetes import client

from tests.kubeapi import KubeApi
from tests.test_namespacecache import eventually
from tests.test_patterntemplate_watch import (
    BROKEN_TYPE,
    TEMPLATES,
    injected,
    logged,
    ready_condition,
    serve,
    template,
    template_file,
)
from webhook.catalog import definition

pytestmark = pytest.mark.slow

SCHEMA = definition.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def status_writes(api: KubeApi, name: str) -> list[dict[str, Any]]:
    """The status writes the server made to one object: PATCH …/NAME/status bodies."""
    return [r.body for r in api.requested("PATCH", f"{TEMPLATES}/{name}/status")]


def read_status(api: KubeApi, name: str) -> dict[str, Any]:
    """The status as a client reads it, through the status subresource."""
    custom = client.CustomObjectsApi(api.client())
    return custom.get_cluster_custom_object_status(definition.GROUP, definition.VERSION, definition.PLURAL, name)


def test_the_status_is_valid_for_the_crd_and_reads_back_as_written(tmp_path):
    with KubeApi() as api:
        api.put(template(lifecycle="auto"), f"{TEMPLATES}/tracer")
        server = serve(api, tmp_path)  # --kube-version 1.36: native sidecars
        try:
            _, digest = injected(server, "tracer")
            eventually(lambda: status_writes(api, "tracer"))
        finally:
            server.stop()
        obj = read_status(api, "tracer")
        jsonschema.Draft7Validator(definition.STATUS, format_checker=jsonschema.FormatChecker()).validate(obj["status"])
        jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(obj)
        [written] = status_writes(api, "tracer")
        assert obj["status"] == {k: v for k, v in written["status"].items() if v is not None}
        [ready] = obj["status"].pop("conditions")
        assert obj["status"] == {"observedGeneration": 1, "digest": digest, "lifecycle": "native",
                                 "origin": "patterntemplate/tracer:1"}
        changed = dt.datetime.strptime(ready.pop("lastTransitionTime"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert abs(dt.datetime.now(dt.timezone.utc) - changed) < dt.timedelta(seconds=30)
        assert ready == {"type": "Ready", "status": "True", "reason": "Served", "observedGeneration": 1,
                         "message": "served as catalogue entry tracer"}
        # Only the status subresource was written, with a merge patch (RBAC: patch on patterntemplates/status).
        writes = [r for r in api.requests if r.method in ("PUT", "PATCH", "POST", "DELETE")]
        assert [(r.method, r.path, r.content_type) for r in writes] == [
            ("PATCH", f"{TEMPLATES}/tracer/status", "application/merge-patch+json")]


def test_nothing_changed_writes_nothing_and_a_second_replica_agrees(tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "tracer.yaml").write_text(template_file("tracer", "registry.example/tracer:from-directory"))
    with KubeApi() as api:
        api.put(template(), f"{TEMPLATES}/tracer")
        first = serve(api, tmp_path, "--catalog", str(catalog))
        second = None
        try:
            eventually(lambda: status_writes(api, "tracer"))
            # The files change (a rebuild, the same catalogue as far as the object goes): no write.
            (catalog / "tracer.yaml").write_text(template_file("tracer", "registry.example/tracer:from-directory"))
            eventually(lambda: len(logged(first, "configuration reloaded")) == 2)
            # A second replica builds the same status: it finds it written and writes nothing either.
            (tmp_path / "second").mkdir()
            second = serve(api, tmp_path / "second", "--catalog", str(catalog))
            eventually(lambda: logged(second, "configuration reloaded"))
            time.sleep(0.5)  # time for a write that should not come
            assert len(status_writes(api, "tracer")) == 1

            # A change: both rebuild, and the status is written once more (by either, or both, the same).
            api.put(template(image="registry.example/tracer:2.0"), f"{TEMPLATES}/tracer")
            eventually(lambda: api.get(f"{TEMPLATES}/tracer")["status"]["observedGeneration"] == 2)
            time.sleep(0.5)
            writes = len(status_writes(api, "tracer"))
            assert writes in (2, 3)
            time.sleep(1.0)  # and then nothing: no back and forth between them
            assert len(status_writes(api, "tracer")) == writes
        finally:
            first.stop()
            if second is not None:
                second.stop()


def test_last_transition_time_moves_only_when_ready_flips(tmp_path):
    with KubeApi() as api:
        api.put(template(), f"{TEMPLATES}/tracer")
        server = serve(api, tmp_path)
        try:
            served = eventually(lambda: ready_condition(api, "tracer"))
            time.sleep(1.1)  # the times have seconds
            api.put(template(image="registry.example/tracer:2.0"), f"{TEMPLATES}/tracer")
            still = eventually(lambda: (c := ready_condition(api, "tracer")).get("observedGeneration") == 2 and c)
            assert (still["status"], still["lastTransitionTime"]) == ("True", served["lastTransitionTime"])
            time.sleep(1.1)
            api.put(template(level_type="str"), f"{TEMPLATES}/tracer")
            broken = eventually(lambda: (c := ready_condition(api, "tracer")).get("observedGeneration") == 3 and c)
            assert (broken["status"], broken["reason"]) == ("False", "Invalid") and BROKEN_TYPE in broken["message"]
            assert broken["lastTransitionTime"] > served["lastTransitionTime"]
            status = api.get(f"{TEMPLATES}/tracer")["status"]
            assert status["observedGeneration"] == 3
            assert status["digest"] == injected(server, "tracer")[1]  # the spec still served: generation 2's
        finally:
            server.stop()


def test_the_lifecycle_is_the_effective_one_and_the_origin_what_is_served(tmp_path):
    names = ("auto-one", "native-one", "regular-one")
    with KubeApi() as api:
        for name, lifecycle in zip(names, ("auto", "native", "regular")):
            api.put(template(name, lifecycle=lifecycle), f"{TEMPLATES}/{name}")
        server = serve(api, tmp_path, "--kube-version", "1.28")  # before native sidecars
        try:
            eventually(lambda: all((api.get(f"{TEMPLATES}/{n}") or {}).get("status") for n in names))
            lifecycles = {n: api.get(f"{TEMPLATES}/{n}")["status"]["lifecycle"] for n in names}
            assert lifecycles == {"auto-one": "regular", "native-one": "native", "regular-one": "regular"}

            # An invalid override of a built-in: the built-in stays what Pods get, and the others stay served.
            api.put(template("log-shipper", level_type="str"), f"{TEMPLATES}/log-shipper")
            shipper = eventually(lambda: (api.get(f"{TEMPLATES}/log-shipper") or {}).get("status"))
            assert shipper["origin"].startswith("built-in log-shipper.yaml:") and "digest" not in shipper
            [ready] = shipper["conditions"]
            assert (ready["status"], ready["reason"]) == ("False", "Invalid") and BROKEN_TYPE in ready["message"]
            assert injected(server, "log-shipper")[0] == "cr.fluentbit.io/fluent/fluent-bit:3.2.10"
            time.sleep(0.3)
            assert all(ready_condition(api, n).get("reason") == "Served" for n in names)
        finally:
            server.stop()
