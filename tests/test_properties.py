"""Property tests of the engine: any Pod shape, any annotation keys, injection twice equals once."""

from __future__ import annotations

import copy

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import apply
from webhook.catalog import catalogue
from webhook.core import additions, engine
from webhook.core.keys import AnnotationKeys
from webhook.core.pod import read_pod
from webhook.core.template import render

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


def reference_app_additions(pod: dict, chosen: list[str], log_dirs: dict[str, str]) -> tuple:
    """The plan's env and volumeMounts of the app containers, its warnings or its denial, computed the
    plain way (a dictionary of each container's env and mounts, entry after entry, value by value):
    what engine's name-set shortcuts must reproduce exactly, down to the order of the operations."""
    envs = [{e.get("name"): e for e in c.get("env") or ()} for c in pod["spec"]["containers"]]
    mounts = [{m.get("mountPath"): m for m in c.get("volumeMounts") or ()} for c in pod["spec"]["containers"]]
    add_env: dict[int, list] = {}
    add_mounts: dict[int, list] = {}
    warnings = []
    for name in chosen:
        entry = CATALOGUE[name]
        values = {f"params.{p.name}": p.default for p in entry.parameters.values()} | {
            "params.upstream": "pg.example.svc:5432", "pod.name": "p", "pod.namespace": "default",
            "pod.serviceAccountName": "default"}
        if "params.logDir" in values:
            values["params.logDir"] = log_dirs[name]
        for index, container in enumerate(pod["spec"]["containers"]):
            for var in render(entry.app_env, values):
                have = envs[index].get(var["name"])
                if have is None:
                    envs[index][var["name"]] = var
                    add_env.setdefault(index, []).append(var)
                elif have != var:
                    warnings.append(f"container {container['name']} already sets {var['name']}; {name} kept that value")
            for mount in render(entry.app_mounts, values):
                have = mounts[index].get(mount["mountPath"])
                if have is None:
                    mounts[index][mount["mountPath"]] = mount
                    add_mounts.setdefault(index, []).append(mount)
                elif have != mount:
                    return None, f"{name}: mount path {mount['mountPath']} in container {container['name']!r} clashes"
    return (list(add_env.items()), list(add_mounts.items()), warnings), None


LOG_DIR = st.sampled_from(["/var/log/app", "/logs"])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_app_container_additions_match_the_plain_computation(data):
    """Containers that already have some of the entries' env names or mount paths (same or other values),
    and entries that agree or disagree on their log directory: the shortcuts change no result."""
    chosen = data.draw(st.lists(st.sampled_from(ENTRIES), min_size=1, max_size=3, unique=True))
    log_dirs = {name: data.draw(LOG_DIR) for name in ("log-shipper", "json-log-adapter")}
    var = st.builds(lambda n, v: {"name": n, "value": v}, st.sampled_from(["LOG_DIR", "DB_HOST", "DB_PORT", "OTHER"]),
                    st.sampled_from(["/var/log/app", "/logs", "127.0.0.1", "5432"]))
    mount = st.builds(lambda v, p: {"name": v, "mountPath": p}, st.sampled_from(["podpatterns-app-logs", "mine"]),
                      LOG_DIR | st.just("/data"))
    containers = [{"name": f"c{i}", "image": "example/app:1", "env": data.draw(st.lists(var, max_size=3)),
                   "volumeMounts": data.draw(st.lists(mount, max_size=2))}
                  for i in range(data.draw(st.integers(1, 4)))]
    annotations = {"podpatterns.io/inject": ", ".join(chosen),
                   "db-ambassador.podpatterns.io/upstream": "pg.example.svc:5432"}
    annotations.update({f"{name}.podpatterns.io/logDir": log_dirs[name] for name in log_dirs if name in chosen})
    pod = {"metadata": {"name": "p", "annotations": annotations},
           "spec": {"containers": containers, "volumes": [{"name": "mine", "emptyDir": {}}]}}
    expected, denial = reference_app_additions(pod, chosen, log_dirs)
    view = read_pod(pod, "default")
    supplied = engine._supplied_parameters(view, CATALOGUE, AnnotationKeys(), set(chosen), [])
    chosen_entries = []
    for name in chosen:
        params = engine._resolve_parameters(CATALOGUE[name], supplied.get(name, {}), AnnotationKeys())
        rendered, native = engine._render(CATALOGUE[name], params, engine._pod_values(view), engine.Settings())
        chosen_entries.append(additions.Chosen(CATALOGUE[name], rendered, native))
    # Entry by entry, and with what the combination adds together kept (webhook.core.combined): the same.
    for combinations in (None, CATALOGUE.combinations):
        warnings: list[str] = []
        try:
            add = additions.build(view, chosen_entries, warnings, combinations)
        except additions.Clash as err:
            assert denial is not None and str(err).startswith(denial), (str(err), denial)
            continue
        assert denial is None, denial
        app_warnings = [w for w in warnings if w.startswith("container ")]
        assert (list(add.app_env.items()), list(add.app_mounts.items()), app_warnings) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pods(), restart=st.sampled_from([None, "Always", "Never"]), host_network=st.booleans(),
       native=st.booleans())
def test_what_a_combination_adds_together_is_what_entry_by_entry_adds(case, restart, host_network, native):
    """webhook.core.combined: the Additions, warnings and clashes of a Pod are the same as those worked out entry
    by entry, whatever the Pod (names, ports and volumes of its own), its restartPolicy and its network."""
    pod, chosen = case
    if not chosen:
        return
    pod = copy.deepcopy(pod)
    pod["spec"]["restartPolicy"] = restart
    pod["spec"]["hostNetwork"] = host_network
    view = read_pod(pod, "default")
    settings_ = engine.Settings(native_sidecars=native)
    supplied = engine._supplied_parameters(view, CATALOGUE, AnnotationKeys(), set(chosen), [])
    entries = []
    for name in chosen:
        params = engine._resolve_parameters(CATALOGUE[name], supplied.get(name, {}), AnnotationKeys())
        rendered, is_native = engine._render(CATALOGUE[name], params, engine._pod_values(view), settings_)
        entries.append(additions.Chosen(CATALOGUE[name], rendered, is_native))
    results = []
    for combinations in (None, CATALOGUE.combinations):
        warnings: list[str] = []
        try:
            results.append((additions.build(view, entries, warnings, combinations), warnings))
        except additions.Clash as err:
            results.append(("clash", str(err)))
    assert results[0] == results[1]
