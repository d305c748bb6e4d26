"""Property tests of the engine: any Pod shape, any annotation keys, injection twice equals once."""

from __future__ import annotations

import copy

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import apply
from webhook import catalogue, engine
from webhook.keys import AnnotationKeys

CATALOGUE = catalogue.load()
ENTRIES = ["log-shipper", "json-log-adapter", "db-ambassador"]
NAME = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(lambda n: n not in ENTRIES)
# Annotation keys full of the two characters JSON Pointer must escape.
KEY = st.text(alphabet="ab~/.-_", min_size=1, max_size=12)


def optional(strategy):
    """Absent, empty, or some items: the three shapes an optional array takes."""
    return st.one_of(st.none(), st.just([]), strategy)


@st.composite
def pods(draw, prefix: str = "podpatterns.io"):
    keys = AnnotationKeys(prefix)
    names = draw(st.lists(NAME, min_size=1, max_size=4, unique=True))
    split = draw(st.integers(1, len(names)))
    volumes = draw(optional(st.lists(st.builds(lambda n: {"name": f"v{n}", "emptyDir": {}}, st.integers(0, 3)),
                                     min_size=1, max_size=3, unique_by=lambda v: v["name"])))

    def container(name: str) -> dict:
        c = {"name": name, "image": "example/app:1"}
        env = draw(optional(st.lists(st.builds(lambda k: {"name": f"E{k}", "value": "x"}, st.integers(0, 5)),
                                     min_size=1, max_size=3, unique_by=lambda e: e["name"])))
        if env is not None:
            c["env"] = env
        mounts = draw(optional(st.just([{"name": v["name"], "mountPath": f"/data/{v['name']}"} for v in volumes or []])))
        if mounts is not None:
            c["volumeMounts"] = mounts
        return c

    spec = {"containers": [container(n) for n in names[:split]]}
    init = names[split:]
    if init or draw(st.booleans()):
        spec["initContainers"] = [{"name": n, "image": "example/init:1"} for n in init]
    if volumes is not None:
        spec["volumes"] = volumes
    chosen = draw(st.lists(st.sampled_from(ENTRIES), min_size=1, max_size=3, unique=True))
    annotations = draw(st.dictionaries(KEY, st.text(max_size=10), max_size=4))
    annotations[keys.inject] = ", ".join(chosen)
    annotations[keys.parameter("db-ambassador", "upstream")] = "pg.example.svc:5432"
    metadata = {"name": "p"}
    if draw(st.booleans()):
        metadata["annotations"] = annotations
        return {"metadata": metadata, "spec": spec}, chosen
    return {"metadata": metadata, "spec": spec}, []


def check_schema(pod: dict) -> None:
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", **pod}, "1.36", strict=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_any_pod_shape_injects_validly_and_twice_equals_once(case):
    pod, chosen = case
    original = copy.deepcopy(pod)
    first = engine.plan(pod, CATALOGUE, engine.Settings(), "default")
    assert first.denial is None, first.denial
    assert pod == original  # the engine never edits its input
    once = apply(pod, first.ops)
    check_schema(once)
    assert first.injected == chosen
    if not chosen:
        assert first.ops == []
        return
    for key, value in original["metadata"].get("annotations", {}).items():
        if key != "podpatterns.io/status":
            assert once["metadata"]["annotations"][key] == value
    injected_names = [c["name"] for c in once["spec"]["initContainers"]][: len(chosen)]
    assert injected_names == chosen
    second = engine.plan(once, CATALOGUE, engine.Settings(), "default")
    assert second.ops == [] and second.denial is None
    assert apply(once, second.ops) == once


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abc~.", min_size=1, max_size=10).map(lambda s: f"x{s}.io"), pods())
def test_a_prefix_with_tilde_is_escaped_in_patch_paths(prefix, case):
    pod, _ = case
    keys = AnnotationKeys(prefix)
    pod["metadata"]["annotations"] = {**pod["metadata"].get("annotations", {}), keys.inject: "log-shipper",
                                      "a/b~c": "kept"}
    plan = engine.plan(pod, CATALOGUE, engine.Settings(keys=keys), "default")
    assert plan.denial is None
    patched = apply(pod, plan.ops)
    assert patched["metadata"]["annotations"]["a/b~c"] == "kept"
    status = patched["metadata"]["annotations"][keys.status]
    assert '"entry":"log-shipper"' in status
    assert engine.plan(patched, CATALOGUE, engine.Settings(keys=keys), "default").ops == []


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=20))
def test_the_engine_answers_anything_without_raising(obj):
    result = engine.plan(obj, CATALOGUE, engine.Settings(), "default")
    assert result.ops == [] or result.denial is None
    assert result.denial is None or result.denial.startswith("the object is not a valid Pod")
