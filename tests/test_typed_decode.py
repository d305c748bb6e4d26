"""The server's fast paths answer exactly what the plain paths answer.

`admission.review` decodes a Pod's CREATE into the fields the engine reads (webhook.core.podfields) and
plans from those; the whole review (orjson, every field) is its oracle here: the same code with the typed
decode switched off. Every input below gets the same answer, byte for byte, both ways: the recorded
reviews, the benchmark's Pods, generated Pod shapes, the policy's cases and the fuzzer's hostile inputs.
The patch the server writes (engine.plan(wire=True): JSON the catalogue's combinations know already) is
the plain operations' JSON, byte for byte.
"""

from __future__ import annotations

import copy
import sys
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import corpus, hostile
from tests.helpers import ROOT
from tests.test_properties import pods
from webhook.catalog import catalogue
from webhook.catalog import policy as policy_file
from webhook.core import engine
from webhook.core.configuration import Configuration
from webhook.core.engine import NamespaceInfo, Settings
from webhook.core.namespaces import StaticNamespaces
from webhook.server import admission, wire

CATALOGUE = catalogue.load()
PLAIN = Configuration(CATALOGUE, Settings())
POLICY = Configuration(CATALOGUE, Settings(), policy_file.load(ROOT / "tests" / "policy" / "policy.yaml", CATALOGUE))
RECORDED = corpus.recorded()
TEMPLATE = json.loads(RECORDED["pod-create-annotated"])


@pytest.fixture(autouse=True)
def server_recursion_limit():
    """The interpreter's default recursion limit, as `podpatterns serve` runs with: earlier tests of a session
    may leave it raised, and above orjson's 1,024 levels a body with more brackets is left to the whole review
    (webhook.server.wire.pod_create)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)


class Counting:
    """Counts the plans made from typed fields (partial) and from the whole Pod."""

    def __init__(self, monkeypatch):
        self.partial = self.whole = 0
        plan = engine.plan

        def counted(*args, **kwargs):
            if kwargs.get("partial"):
                self.partial += 1
            else:
                self.whole += 1
            return plan(*args, **kwargs)

        monkeypatch.setattr(engine, "plan", counted)


def answers(body: bytes, configuration: Configuration, namespaces=None) -> tuple:
    try:
        got = admission.review(body, configuration, namespaces)
    except admission.BadReview as err:
        return ("400", str(err))
    return (got.body, got.outcome, got.injected)


def both(body: bytes, configuration: Configuration = PLAIN, namespaces=None) -> tuple:
    """(typed, whole) answers of one body."""
    typed = answers(body, configuration, namespaces)
    original = wire.pod_create
    wire.pod_create = lambda body: None
    try:
        whole = answers(body, configuration, namespaces)
    finally:
        wire.pod_create = original
    return typed, whole


def review_of(pod: dict, namespace: str = "default") -> bytes:
    review = copy.deepcopy(TEMPLATE)
    review["request"]["object"] = pod
    review["request"]["namespace"] = namespace
    return orjson.dumps(review)


def pod_with(annotations: dict[str, str], **spec) -> dict:
    pod = copy.deepcopy(TEMPLATE["request"]["object"])
    pod["metadata"]["annotations"] = dict(annotations)
    pod["spec"].update(spec)
    return pod


def test_the_recorded_reviews_and_the_benchmark_pods_are_answered_from_typed_fields(monkeypatch):
    counting = Counting(monkeypatch)
    from_whole_pod = set()
    for name, body in {**RECORDED, **corpus.corpus()}.items():
        before = (counting.partial, counting.whole)
        typed, whole = both(body)
        assert typed == whole, name
        if orjson.loads(body)["request"]["operation"] != "CREATE":
            assert (counting.partial, counting.whole) == before, name  # an UPDATE is checked, never planned
            continue
        assert counting.partial == before[0] + 1, name  # every CREATE is first planned from typed fields
        if counting.whole == before[1] + 2:  # its answer, then the oracle's
            from_whole_pod.add(name)
    # The one that needs more: its app container already sets DB_HOST, which db-ambassador sets too (the
    # warning compares the values).
    assert from_whole_pod == {"pod-create-generatename-owned"}


@pytest.mark.parametrize("kind", sorted(hostile.KINDS))
def test_hostile_input_gets_the_same_answer(kind):
    for index in range(300):
        item = hostile.case_at(20261130, index)
        if item.kind != kind:
            continue
        typed, whole = both(item.body)
        assert typed == whole, hostile.describe(item)


# The Namespaces of tests/policy/policy.yaml's rules: mandatory, limits defaulted/warned/denied, caps, bounds,
# allowed entries, warn rollouts.
NAMESPACES = StaticNamespaces([NamespaceInfo(name, labels) for name, labels in {
    "default": {}, "prod": {"env": "prod"}, "dev": {"env": "dev"}, "test": {"env": "test"},
    "sandbox": {"tier": "sandbox"}, "staging": {"rollout": "warn"}}.items()])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pods(), configuration=st.sampled_from([PLAIN, POLICY]),
       namespace=st.sampled_from(["default", "prod", "dev", "test", "sandbox", "staging"]))
def test_any_pod_shape_gets_the_same_answer(case, configuration, namespace):
    pod, _ = case
    typed, whole = both(review_of(pod, namespace), configuration, NAMESPACES)
    assert typed == whole
    assert_wire_patch_is_plain(pod, configuration, namespace)


def assert_wire_patch_is_plain(pod: dict, configuration: Configuration, namespace: str) -> None:
    plans = [engine.plan(copy.deepcopy(pod), configuration.catalogue, configuration.settings, namespace,
                         namespace_info=NAMESPACES.lookup(namespace), policy=configuration.policy, wire=wire)
             for wire in (False, True)]
    assert orjson.dumps(plans[1].ops) == orjson.dumps(plans[0].ops)
    assert (plans[1].warnings, plans[1].denial) == (plans[0].warnings, plans[0].denial)


@pytest.mark.parametrize("name", [name for name, body in {**RECORDED, **corpus.corpus()}.items()
                                  if orjson.loads(body)["request"]["operation"] == "CREATE"])
def test_the_wire_patch_of_the_recorded_and_benchmark_pods_is_the_plain_one(name):
    request = orjson.loads({**RECORDED, **corpus.corpus()}[name])["request"]
    for configuration in (PLAIN, POLICY):
        for namespace in ("default", "prod", "staging"):
            assert_wire_patch_is_plain(request["object"], configuration, namespace)


# What the typed fields cannot decide: the plan asks for the whole Pod, and the answer is the whole Pod's.
INJECT = {"podpatterns.io/inject": "log-shipper"}
NEEDS_WHOLE = {
    "a claimed entry": pod_with(INJECT | {"podpatterns.io/status":
                                          '[{"entry":"log-shipper","pattern":"sidecar","digest":"sha256:0"}]'}),
    "a volume under an entry's volume name": pod_with(INJECT, volumes=[{"name": "podpatterns-app-logs", "emptyDir": {}}]),
    "an env var under an entry's name": pod_with(
        {"podpatterns.io/inject": "db-ambassador", "db-ambassador.podpatterns.io/upstream": "pg:5432"},
        containers=[{"name": "app", "image": "app:1", "env": [{"name": "DB_HOST", "value": "mine"}]}]),
}


@pytest.mark.parametrize("name", NEEDS_WHOLE)
def test_what_typed_fields_cannot_decide_is_planned_from_the_whole_pod(name, monkeypatch):
    counting = Counting(monkeypatch)
    typed, whole = both(review_of(NEEDS_WHOLE[name]))
    assert typed == whole
    assert counting.partial == 1 and counting.whole == 2  # tried typed, then whole; then the oracle


def test_a_limits_rule_plans_from_the_whole_pod_and_keeps_fields_the_typed_decode_skips(monkeypatch):
    """A policy default replaces a container's resources whole: its `claims`, which the typed fields leave
    out, must come back in the patch."""
    counting = Counting(monkeypatch)
    pod = pod_with(INJECT)
    pod["spec"]["containers"][0]["resources"] = {"claims": [{"name": "gpu"}]}
    typed, whole = both(review_of(pod, "prod"), POLICY, NAMESPACES)
    assert typed == whole and counting.whole == 2
    patch = json.loads(__import__("base64").b64decode(orjson.loads(typed[0])["response"]["patch"]))
    resources = [op["value"] for op in patch if op["path"] == "/spec/containers/0/resources"]
    assert resources and resources[0]["claims"] == [{"name": "gpu"}], patch


@pytest.mark.parametrize(("body", "expected"), [
    # Not UTF-8 in a string the typed decode would skip: left to orjson, which refuses it.
    (review_of(pod_with(INJECT)).replace(b'"image":"nginx:1.27"', b'"image":"nginx:\xff"'), "str is not valid UTF-8"),
    # A type the typed fields do not take (a port as a string): the whole Pod's own message.
    (review_of(pod_with(INJECT, containers=[{"name": "a", "image": "a", "ports": [{"containerPort": "80"}]}])),
     "the object is not a valid Pod: spec.containers[0].ports[0].containerPort must be an integer"),
])
def test_input_the_typed_decode_refuses_gets_the_whole_reviews_answer(body, expected):
    typed, whole = both(body)
    assert typed == whole
    assert expected in (typed[1] if typed[0] == "400" else orjson.loads(typed[0])["response"]["status"]["message"])


def test_a_number_beyond_a_double_in_a_field_the_engine_does_not_read_is_skipped():
    """The one difference, documented in the README: orjson refuses such a number anywhere (HTTP 400); the
    typed decode skips it like any field the engine does not read. The apiserver cannot send one."""
    body = review_of(pod_with(INJECT)).replace(b'"terminationGracePeriodSeconds":30', b'"terminationGracePeriodSeconds":1e400')
    assert b"1e400" in body
    typed, whole = both(body)
    assert whole[0] == "400" and "number is infinity" in whole[1]
    assert orjson.loads(typed[0])["response"]["allowed"] is True and typed[1] == "injected"


def test_the_typed_fields_are_only_what_the_engine_reads():
    """What the module says it skips is skipped: env values, commands, probes, managedFields."""
    body = RECORDED["pod-create-annotated"]
    request = wire.pod_create(body)
    assert request is not None
    pod = request.object
    assert set(pod) == {"metadata", "spec"}
    assert "managedFields" not in pod["metadata"]
    container = pod["spec"]["containers"][0]
    assert set(container) <= {"name", "ports", "env", "volumeMounts", "envFrom", "restartPolicy"}


@pytest.mark.parametrize("limit", [1000, 5000])
@pytest.mark.parametrize("depth", [900, 1030])
def test_nesting_in_a_skipped_field_gets_the_whole_reviews_answer_whatever_the_recursion_limit(depth, limit):
    """msgspec's depth limit is the interpreter's recursion limit (hypothesis raises it), orjson's is 1,024
    levels: a body nested deeper than orjson reads is orjson's to refuse either way."""
    body = RECORDED["pod-create-annotated"].replace(b'"dnsPolicy": "ClusterFirst"',
                                                    b'"dnsPolicy": ' + b"[" * depth + b"]" * depth)
    assert len(body) > len(RECORDED["pod-create-annotated"])
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        typed, whole = both(body)
    finally:
        sys.setrecursionlimit(before)
    assert typed == whole
    assert (whole[0] == "400") == (depth > 1024)
