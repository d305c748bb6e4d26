"""Which requests the rendered chart sends to the webhook, and what its guard admits, decided the way the
apiserver decides them: rules, then label selectors (namespaceSelector, objectSelector), then CEL
matchConditions (cel-python, an implementation independent of the chart and the server), failurePolicy on
an error; for a ValidatingAdmissionPolicy, its binding's selectors, then its variables and validations.

The rule the chart keeps: a Pod that does not use podpatterns matches no webhook, so an install whose
replicas are not ready (image missing, no caBundle yet) never blocks it; a Pod that does is refused while
the webhook is down (failurePolicy Fail), never created without its entries.
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml

from tests.helpers import ROOT, podpatterns_command
from tests.test_chart import CHART, FULLNAME, NAMESPACE, SCENARIOS, find, helm, render

POLICY_VALUES = ["-f", "tests/policy/chart-values.yaml"]  # prod-logs (mandatory) and prod-limits, env=prod
GUARD_VALUES = SCENARIOS["guard-everything"]  # charts/podpatterns/ci/guard-values.yaml
EXCLUDED = (NAMESPACE, "kube-system", "kube-public", "kube-node-lease")
STATUS = "podpatterns.io/status"
INJECT = "podpatterns.io/inject"
OPT_IN = {"podpatterns.io/injection": "enabled"}
BUILTIN_IMAGES = {"log-shipper": "cr.fluentbit.io/fluent/fluent-bit:3.2.10",
                  "json-log-adapter": "cr.fluentbit.io/fluent/fluent-bit:3.2.10",
                  "db-ambassador": "alpine/socat:1.8.0.3"}


# --- The apiserver's side, small and literal

def namespace(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> dict:
    """A Namespace as the apiserver stores it: it labels every Namespace with its own name."""
    metadata: dict[str, Any] = {"name": name, "labels": {**(labels or {}), "kubernetes.io/metadata.name": name}}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def pod(ns: str = "shop", labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        **spec: Any) -> dict:
    metadata: dict[str, Any] = {"name": "web", "namespace": ns}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}], **spec}}


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist), ANDed; an
    absent or empty selector matches everything. Refuses what the apiserver would refuse to store."""
    if not selector:
        return True
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator in ("In", "NotIn"):
            assert values, f"{operator} needs values: {expression}"
        else:
            assert not values, f"{operator} takes no values: {expression}"
        if operator == "In":
            matched = key in labels and labels[key] in values
        elif operator == "NotIn":
            matched = key not in labels or labels[key] not in values
        elif operator == "Exists":
            matched = key in labels
        elif operator == "DoesNotExist":
            matched = key not in labels
        else:
            raise AssertionError(f"unknown operator {operator}")
        if not matched:
            return False
    return True


@dataclass
class Request:
    operation: str
    ns: dict[str, Any]
    object: dict[str, Any] | None
    old: dict[str, Any] | None = None
    subresource: str = ""

    def admission_request(self) -> dict[str, Any]:
        return {"operation": self.operation, "namespace": self.ns["metadata"]["name"], "name": "web",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "subResource": self.subresource, "dryRun": False,
                "userInfo": {"username": "alice", "groups": ["system:authenticated"]}}


def create(p: dict[str, Any], ns: dict[str, Any]) -> Request:
    return Request("CREATE", ns, p)


def update(old: dict[str, Any], new: dict[str, Any], ns: dict[str, Any], subresource: str = "") -> Request:
    return Request("UPDATE", ns, new, old, subresource)


def cel(expression: str, activation: dict[str, Any]) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression)).evaluate(activation)


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _rules_match(rules: list[dict[str, Any]], request: Request) -> bool:
    resource = "pods" + (f"/{request.subresource}" if request.subresource else "")
    return any((request.operation in rule["operations"] or "*" in rule["operations"])
               and "" in rule["apiGroups"] and "v1" in rule["apiVersions"] and resource in rule["resources"]
               for rule in rules)


def _objects_match(selector: dict[str, Any] | None, request: Request) -> bool:
    # On UPDATE the apiserver matches the selector against the old and the new object: either will do.
    return any(selector_matches(selector, _labels(o)) for o in (request.object, request.old) if o is not None)


def webhook_outcome(webhook: dict[str, Any], request: Request) -> str:
    """"skip" (not called), "call", or "error" (a matchCondition failed to evaluate: failurePolicy decides)."""
    if not _rules_match(webhook["rules"], request):
        return "skip"
    if not selector_matches(webhook.get("namespaceSelector"), request.ns["metadata"]["labels"]):
        return "skip"
    if not _objects_match(webhook.get("objectSelector"), request):
        return "skip"
    # The apiserver evaluates a webhook's matchConditions with object, oldObject, request (and authorizer);
    # namespaceObject is declared but bound to nothing (matcher.go passes a nil namespace).
    activation = {"object": celpy.json_to_cel(request.object), "oldObject": celpy.json_to_cel(request.old),
                  "request": celpy.json_to_cel(request.admission_request()), "namespaceObject": celpy.json_to_cel(None)}
    errors = []
    for condition in webhook.get("matchConditions") or []:
        try:
            result = cel(condition["expression"], activation)
        except celpy.CELEvalError as err:
            errors.append(err)
            continue
        assert isinstance(result, celpy.celtypes.BoolType), f"{condition['name']} gave {result!r}"
        if not result:
            return "skip"  # any false condition: never called, whatever errored
    return "error" if errors else "call"


def called(configuration: dict[str, Any], request: Request) -> list[str]:
    """Names of the webhooks the apiserver calls, or fails on, for the request."""
    outcomes = {w["name"]: webhook_outcome(w, request) for w in configuration["webhooks"]}
    return [name for name, outcome in outcomes.items() if outcome != "skip"]


def admitted_while_down(configuration: dict[str, Any], request: Request) -> bool:
    """Whether the request gets through while no replica answers (or the caBundle is not written yet):
    a webhook that is called, or whose conditions error, with failurePolicy Fail refuses it."""
    return not any(w["failurePolicy"] == "Fail" for w in configuration["webhooks"]
                   if webhook_outcome(w, request) != "skip")


@dataclass
class Guard:
    policy: dict[str, Any]
    binding: dict[str, Any]
    evaluated: list[str] = field(default_factory=list)

    def applies(self, request: Request) -> bool:
        constraints = self.policy["spec"]["matchConstraints"]
        if not _rules_match([{**r, "operations": r["operations"]} for r in constraints["resourceRules"]], request):
            return False
        resources = self.binding["spec"]["matchResources"]
        return (selector_matches(resources.get("namespaceSelector"), request.ns["metadata"]["labels"])
                and _objects_match(resources.get("objectSelector"), request))

    def admits(self, request: Request) -> bool:
        """The policy's verdict where its binding applies: matchConditions, variables in order, validations;
        an evaluation error denies (failurePolicy Fail). Raises if the binding does not apply."""
        assert self.applies(request), "the guard does not apply to this request"
        spec = self.policy["spec"]
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(request.object), "oldObject": celpy.json_to_cel(request.old),
            "request": celpy.json_to_cel(request.admission_request()), "namespaceObject": celpy.json_to_cel(request.ns)}
        try:
            for condition in spec.get("matchConditions") or []:
                if not cel(condition["expression"], activation):
                    return True
            variables: dict[str, Any] = {}
            for variable in spec.get("variables") or []:
                variables[variable["name"]] = cel(variable["expression"], {**activation, "variables": celpy.json_to_cel(variables)})
                variables[variable["name"]] = bool(variables[variable["name"]])
            activation["variables"] = celpy.json_to_cel(variables)
            return all(bool(cel(v["expression"], activation)) for v in spec["validations"])
        except celpy.CELEvalError:
            return False


def guards(docs: list[dict[str, Any]]) -> dict[str, Guard]:
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {d["spec"]["policyName"]: d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert set(policies) == set(bindings)
    return {name.removeprefix(f"{FULLNAME}-"): Guard(policies[name], bindings[name]) for name in policies}


def guard_verdict(docs: list[dict[str, Any]], request: Request) -> bool:
    """Admitted by every guard that applies (True when none does)."""
    return all(g.admits(request) for g in guards(docs).values() if g.applies(request))


def configuration(settings: list[str]) -> dict[str, Any]:
    return find(render(settings), "MutatingWebhookConfiguration", FULLNAME)


@pytest.fixture(scope="module")
def default() -> dict[str, Any]:
    return configuration([])


@pytest.fixture(scope="module")
def with_policy() -> dict[str, Any]:
    return configuration(POLICY_VALUES)


@pytest.fixture(scope="module")
def guarded() -> list[dict[str, Any]]:
    return render(GUARD_VALUES)


# --- Scope: a Pod that does not use podpatterns never meets the webhook

PLAIN_NAMESPACES = [namespace("shop"), namespace("dev", {"env": "dev"}), namespace("team-a", {"team": "a"})]


@pytest.mark.parametrize("settings", [[], POLICY_VALUES, GUARD_VALUES, SCENARIOS["custom-selectors"]],
                         ids=["default", "policy", "guard", "custom-selectors"])
def test_a_plain_pod_where_podpatterns_is_not_used_matches_no_webhook_and_is_created_while_it_is_down(settings):
    config = configuration(settings)
    for ns in PLAIN_NAMESPACES:
        name = ns["metadata"]["name"]
        for request in (create(pod(name), ns), create(pod(name, labels={"app": "web"}, annotations={"x": "y"}), ns),
                        update(pod(name), pod(name, labels={"v": "2"}), ns)):
            assert called(config, request) == [], (name, request.operation)
            assert admitted_while_down(config, request)


def test_the_default_install_has_no_cluster_wide_webhook(default):
    # Every CREATE entry needs the Pod's annotation, the Namespace's opt-in label, or a policy rule's scope
    # (none by default); the UPDATE entry needs the status annotation the webhook writes.
    assert [w["name"] for w in default["webhooks"]] == [
        "inject.podpatterns.io", "namespace.inject.podpatterns.io", "update.podpatterns.io"]
    for webhook in default["webhooks"]:
        assert webhook["failurePolicy"] == "Fail"
        narrowed = webhook.get("matchConditions") or webhook["namespaceSelector"].get("matchLabels")
        assert narrowed, f"{webhook['name']} would see every Pod"


def test_a_pod_that_asks_by_annotation_is_sent_once_and_refused_while_the_webhook_is_down(default, with_policy):
    for config in (default, with_policy):
        for ns in PLAIN_NAMESPACES + [namespace("prod", {"env": "prod"})]:
            request = create(pod(ns["metadata"]["name"], annotations={INJECT: "log-shipper"}), ns)
            assert called(config, request) == ["inject.podpatterns.io"]
            assert not admitted_while_down(config, request)
        # In an opted-in Namespace it goes to that Namespace's entry instead: still once.
        ns = namespace("shop", OPT_IN)
        assert called(config, create(pod(annotations={INJECT: "log-shipper"}), ns)) == ["namespace.inject.podpatterns.io"]


def test_every_pod_of_an_opted_in_namespace_is_sent_and_refused_while_the_webhook_is_down(default):
    for ns in (namespace("shop", OPT_IN), namespace("shop", OPT_IN, {INJECT: "log-shipper"})):
        request = create(pod(), ns)
        assert called(default, request) == ["namespace.inject.podpatterns.io"]
        assert not admitted_while_down(default, request)
    assert called(default, create(pod(), namespace("shop", {"podpatterns.io/injection": "disabled"}))) == []


def test_namespace_defaults_need_the_opt_in_label_because_the_apiserver_cannot_read_annotations(default):
    # namespaceSelector reads labels only, and webhook matchConditions get no namespaceObject: a Namespace
    # with only the inject annotation is invisible to the apiserver's matching (README: label it too).
    annotated_only = namespace("shop", annotations={INJECT: "log-shipper"})
    assert called(default, create(pod(), annotated_only)) == []
    text = json.dumps(default)
    assert "namespaceObject" not in text  # it would be null there: an error, and failurePolicy Fail refuses


def test_pods_a_policy_rule_selects_are_sent_and_refused_while_the_webhook_is_down(with_policy):
    # tests/policy/chart-values.yaml: prod-logs (mandatory log-shipper, env=prod Pods without a batch label)
    # and prod-limits (every env=prod Pod): the second's scope holds the first's, so one entry serves both.
    rules = [w for w in with_policy["webhooks"] if w["name"].endswith(".rule.podpatterns.io")]
    assert [w["name"] for w in rules] == ["prod-limits.rule.podpatterns.io"]
    prod = namespace("shop", {"env": "prod"})
    for p in (pod(), pod(labels={"batch": "nightly"})):
        request = create(p, prod)
        assert called(with_policy, request) == ["prod-limits.rule.podpatterns.io"]
        assert not admitted_while_down(with_policy, request)
    # An annotated prod Pod goes to the annotation's entry only; the server applies the rules there too.
    assert called(with_policy, create(pod(annotations={INJECT: "db-ambassador"}), prod)) == ["inject.podpatterns.io"]
    assert called(with_policy, create(pod(), namespace("shop", {"env": "dev"}))) == []


def test_rule_scopes_follow_each_rules_selectors(guarded):
    config = find(guarded, "MutatingWebhookConfiguration")
    prod, shop = namespace("prod", {"env": "prod"}), namespace("shop")
    assert called(config, create(pod("prod"), prod)) == ["prod-everything.rule.podpatterns.io"]
    # prod-batch-limits (env=prod, batch=true) selects a subset of prod-everything's Pods: folded into it.
    assert called(config, create(pod("prod", labels={"batch": "true"}), prod)) == ["prod-everything.rule.podpatterns.io"]
    assert called(config, create(pod("shop", labels={"tail": "yes"}), shop)) == ["tailed.rule.podpatterns.io"]
    assert called(config, create(pod("shop", labels={"tail": "no"}), shop)) == []
    # Two rules whose scopes overlap without one holding the other: sent to both (the second call finds the
    # Pod injected and answers without a patch).
    assert called(config, create(pod("prod", labels={"tail": "yes"}), prod)) == [
        "prod-everything.rule.podpatterns.io", "tailed.rule.podpatterns.io"]


def test_a_rule_without_selectors_is_one_cluster_wide_scope_that_still_spares_the_excluded_namespaces(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": {"rules": [
        {"name": "prod-logs", "namespaceSelector": {"matchLabels": {"env": "prod"}}, "inject": ["log-shipper"]},
        {"name": "not-overloaded", "maxContainers": 6},
        {"name": "sandboxes", "namespaceSelector": {"matchLabels": {"tier": "sandbox"}}, "allowedEntries": ["json-log-adapter"]},
    ]}}))
    docs = render([], "-f", str(values))
    config = find(docs, "MutatingWebhookConfiguration")
    rules = [w["name"] for w in config["webhooks"] if w["name"].endswith(".rule.podpatterns.io")]
    assert rules == ["not-overloaded.rule.podpatterns.io"]  # holds prod-logs; allowedEntries alone adds no scope
    for ns in PLAIN_NAMESPACES + [namespace("prod", {"env": "prod"})]:
        assert called(config, create(pod(ns["metadata"]["name"]), ns)) == ["not-overloaded.rule.podpatterns.io"]
    for name in EXCLUDED:
        assert called(config, create(pod(name), namespace(name))) == []
    notes = helm("install", "pp", str(CHART), "-n", NAMESPACE, "--dry-run=client", "-f", str(values))
    assert notes.returncode == 0, notes.stderr
    assert "not-overloaded, prod-logs: every namespace" in notes.stdout


@pytest.mark.parametrize("settings", [[], POLICY_VALUES, GUARD_VALUES], ids=["default", "policy", "guard"])
def test_the_excluded_namespaces_never_meet_the_webhook(settings):
    config = configuration(settings)
    everything = {"env": "prod", **OPT_IN}
    for name in EXCLUDED:
        ns = namespace(name, everything, {INJECT: "log-shipper"})
        asking = pod(name, labels={"tail": "yes"}, annotations={INJECT: "log-shipper", STATUS: "[]"})
        for request in (create(asking, ns), update(asking, pod(name), ns)):
            assert called(config, request) == [], name
            assert admitted_while_down(config, request)


def test_updates_are_sent_only_for_injected_pods_and_never_for_subresources(default):
    ns = namespace("shop")
    injected = pod(annotations={STATUS: '[{"entry":"log-shipper","pattern":"sidecar","digest":"x"}]'})
    swapped = copy.deepcopy(injected)
    swapped["spec"]["containers"][0]["image"] = "busybox:1.36"
    request = update(injected, swapped, ns)
    assert called(default, request) == ["update.podpatterns.io"]
    assert not admitted_while_down(default, request)
    [webhook] = [w for w in default["webhooks"] if w["name"] == "update.podpatterns.io"]
    assert webhook["rules"] == [{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                 "resources": ["pods"], "scope": "Namespaced"}]
    # A plain Pod, or one that only now claims a status, never injected: not sent.
    assert called(default, update(pod(), pod(labels={"v": "2"}), ns)) == []
    assert called(default, update(pod(), injected, ns)) == []
    # Subresources are not registered: an ephemeral container, a status or a resize stay allowed.
    for subresource in ("ephemeralcontainers", "status", "resize", "binding", "eviction"):
        assert called(default, update(injected, swapped, ns, subresource)) == []
    # And an opted-in Namespace does not send its UPDATEs of plain Pods either.
    assert called(default, update(pod(), pod(labels={"v": "2"}), namespace("shop", OPT_IN))) == []


def test_the_webhooks_values_narrow_every_entry():
    # custom-selectors: namespaces labelled team=payments and tier=backend, Pods without the skip label,
    # no ownerReferences (a user matchCondition), monitoring excluded, prefix patterns.example.com.
    config = configuration(SCENARIOS["custom-selectors"])
    assert {w["failurePolicy"] for w in config["webhooks"]} == {"Ignore"}
    payments = namespace("pay", {"team": "payments", "tier": "backend"})
    asking = pod("pay", annotations={"patterns.example.com/inject": "log-shipper"})
    assert called(config, create(asking, payments)) == ["inject.podpatterns.io"]
    assert called(config, create(pod("pay", annotations={INJECT: "log-shipper"}), payments)) == []  # other prefix
    assert called(config, create(asking, namespace("pay", {"team": "payments"}))) == []
    skipped = pod("pay", labels={"podpatterns.io/skip": "yes"}, annotations={"patterns.example.com/inject": "x"})
    assert called(config, create(skipped, payments)) == []
    owned = copy.deepcopy(asking)
    owned["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-1", "uid": "u", "apiVersion": "apps/v1"}]
    assert called(config, create(owned, payments)) == []
    assert called(config, create(pod("pay"), namespace("pay", {"team": "payments", "tier": "backend",
                                                               "patterns.example.com/injection": "enabled"}))) == [
        "namespace.inject.podpatterns.io"]
    monitoring = namespace("monitoring", {"team": "payments", "tier": "backend"})
    assert called(config, create(pod("monitoring", annotations={"patterns.example.com/inject": "x"}), monitoring)) == []


def test_the_match_conditions_never_fail_to_evaluate(guarded):
    # An error would hand the decision to failurePolicy (Fail: a refusal) even for a Pod out of scope.
    config = find(guarded, "MutatingWebhookConfiguration")
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": []}}
    shapes = [bare, pod(), pod(labels={"a": "b"}), pod(annotations={INJECT: ""}), pod(annotations={STATUS: "[]"})]
    for ns in PLAIN_NAMESPACES + [namespace("prod", {"env": "prod"}), namespace("o", OPT_IN)]:
        for shape in shapes:
            for request in (create(shape, ns), update(shape, shape, ns)):
                assert all(webhook_outcome(w, request) != "error" for w in config["webhooks"])


# --- The guard: containers, not the annotation

def _injected(tmp_path: Path, docs: list[dict[str, Any]], manifest: list[dict[str, Any]], *flags: str) -> dict[str, Any]:
    """The Pod as `podpatterns inject` prints it, with the chart's own policy and catalogue."""
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir(exist_ok=True)
    for file, text in (find(docs, "ConfigMap", f"{FULLNAME}-catalogue").get("data") or {}).items():
        (catalogue / file).write_text(text)
    policy = tmp_path / "policy.yaml"
    policy.write_text(find(docs, "ConfigMap", f"{FULLNAME}-policy")["data"]["policy.yaml"])
    source = tmp_path / "pod.yaml"
    source.write_text(yaml.safe_dump_all(manifest))
    done = subprocess.run([*podpatterns_command(), "inject", "-f", str(source), "--policy", str(policy),
                           "--catalog", str(catalogue), *flags], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return next(d for d in yaml.safe_load_all(done.stdout) if d["kind"] == "Pod")


def _container(p: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for kind in ("initContainers", "containers") for c in p["spec"].get(kind, []) if c["name"] == name)


def _without(p: dict[str, Any], name: str) -> dict[str, Any]:
    p = copy.deepcopy(p)
    for kind in ("initContainers", "containers"):
        if kind in p["spec"]:
            p["spec"][kind] = [c for c in p["spec"][kind] if c["name"] != name]
    return p


def _swapped(p: dict[str, Any], name: str, image: str) -> dict[str, Any]:
    p = copy.deepcopy(p)
    _container(p, name)["image"] = image
    return p


@pytest.fixture(scope="module")
def prod_pod(tmp_path_factory, guarded) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Pod as a developer writes it, the same Pod as podpatterns injects it) in a prod Namespace."""
    ns = namespace("prod", {"env": "prod"})
    plain = pod("prod")
    return plain, _injected(tmp_path_factory.mktemp("inject"), guarded, [ns, plain])


PROD = namespace("prod", {"env": "prod"})


def test_the_guard_admits_the_pod_podpatterns_injects_and_denies_it_uninjected(guarded, prod_pod):
    plain, injected = prod_pod
    assert {c["name"] for c in injected["spec"]["initContainers"]} == set(BUILTIN_IMAGES)  # native sidecars
    assert list(guards(guarded)) == ["prod-everything", "tailed"]
    guard = guards(guarded)["prod-everything"]
    assert guard.admits(create(injected, PROD)) is True
    assert guard.admits(create(plain, PROD)) is False
    message = guard.policy["spec"]["validations"][0]["message"]
    assert "policy rule prod-everything makes log-shipper, json-log-adapter, db-ambassador mandatory" in message
    assert "log-shipper (image cr.fluentbit.io/fluent/fluent-bit:3.2.10)" in message
    # Each entry counts on its own: any one of the three missing is a denial.
    for name in BUILTIN_IMAGES:
        stripped = _without(injected, name)
        assert guard.admits(create(stripped, PROD)) is False, name


def test_a_forged_status_annotation_is_denied_with_or_without_a_look_alike_sidecar(guarded, prod_pod):
    plain, injected = prod_pod
    guard = guards(guarded)["prod-everything"]
    forged = copy.deepcopy(plain)
    forged["metadata"]["annotations"] = {STATUS: injected["metadata"]["annotations"][STATUS]}
    assert guard.admits(create(forged, PROD)) is False
    # The issue's look-alike: native sidecars under the entries' names, running busybox.
    look_alike = copy.deepcopy(forged)
    look_alike["spec"]["initContainers"] = [{"name": name, "image": "busybox:1.36", "restartPolicy": "Always"}
                                            for name in BUILTIN_IMAGES]
    assert guard.admits(create(look_alike, PROD)) is False
    # One look-alike among the real ones is enough to deny.
    assert guard.admits(create(_swapped(injected, "log-shipper", "busybox:1.36"), PROD)) is False
    # The right image, but an init container that runs to completion instead of a sidecar.
    finite = copy.deepcopy(injected)
    del _container(finite, "log-shipper")["restartPolicy"]
    assert guard.admits(create(finite, PROD)) is False
    # The containers without the status annotation: not what podpatterns made either.
    unrecorded = copy.deepcopy(injected)
    del unrecorded["metadata"]["annotations"][STATUS]
    assert guard.admits(create(unrecorded, PROD)) is False


def test_the_guard_admits_entries_injected_as_regular_containers(tmp_path, guarded):
    # On Kubernetes 1.28 lifecycle auto injects regular containers (no native sidecars there).
    injected = _injected(tmp_path, guarded, [PROD, pod("prod")], "--kube-version", "1.28")
    assert "initContainers" not in injected["spec"]
    assert {c["name"] for c in injected["spec"]["containers"]} >= set(BUILTIN_IMAGES)
    guard = guards(guarded)["prod-everything"]
    assert guard.admits(create(injected, PROD)) is True
    assert guard.admits(create(_swapped(injected, "db-ambassador", "busybox:1.36"), PROD)) is False


def test_on_update_an_injected_container_may_not_change(guarded, prod_pod):
    plain, injected = prod_pod
    guard = guards(guarded)["prod-everything"]
    # kubectl set image pod/web log-shipper=busybox:1.36
    assert guard.admits(update(injected, _swapped(injected, "log-shipper", "busybox:1.36"), PROD)) is False
    assert guard.admits(update(injected, _swapped(injected, "db-ambassador", "alpine/socat:latest"), PROD)) is False
    removed = copy.deepcopy(injected)
    del removed["metadata"]["annotations"][STATUS]
    assert guard.admits(update(injected, removed, PROD)) is False
    # What the Pod's owner may still change: labels, the app's own image.
    relabelled = copy.deepcopy(injected)
    relabelled["metadata"]["labels"] = {"version": "2"}
    assert guard.admits(update(injected, relabelled, PROD)) is True
    assert guard.admits(update(injected, _swapped(injected, "web", "nginx:1.28"), PROD)) is True
    # A Pod created before the rule (never injected) is not made worse by an update: its controllers can
    # still, e.g., remove a finalizer.
    finalized = copy.deepcopy(plain)
    finalized["metadata"]["finalizers"] = ["batch.kubernetes.io/job-tracking"]
    assert guard.admits(update(finalized, plain, PROD)) is True


def test_the_guard_checks_catalogue_entries_from_the_chart_values(tmp_path, guarded):
    shop = namespace("shop")
    plain = pod("shop", labels={"tail": "yes"})
    injected = _injected(tmp_path, guarded, [shop, plain])
    assert _container(injected, "tailer")["image"] == "busybox:1.37"  # from the catalogue value
    guard = guards(guarded)["tailed"]
    assert guard.binding["spec"]["matchResources"]["objectSelector"] == {"matchLabels": {"tail": "yes"}}
    assert guard.admits(create(injected, shop)) is True
    assert guard.admits(create(plain, shop)) is False
    assert guard.admits(update(injected, _swapped(injected, "tailer", "busybox:1.36"), shop)) is False
    assert guards(guarded)["prod-everything"].applies(create(injected, shop)) is False


def test_the_guard_spares_mirror_pods_and_pods_out_of_its_rules_scope(guarded, prod_pod):
    plain, injected = prod_pod
    mirror = copy.deepcopy(plain)
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    assert guards(guarded)["prod-everything"].admits(create(mirror, PROD)) is True  # the webhook never changes them
    for request in (create(plain, namespace("dev", {"env": "dev"})), create(plain, namespace(NAMESPACE, {"env": "prod"})),
                    create(plain, namespace("kube-system", {"env": "prod"})),
                    update(injected, _swapped(injected, "log-shipper", "x"), PROD, "ephemeralcontainers")):
        assert not any(g.applies(request) for g in guards(guarded).values())
        assert guard_verdict(guarded, request) is True


def test_the_guard_covers_exactly_the_pods_the_webhook_injects_for_the_rule(guarded):
    """Scope consistency: a Pod a mandatory rule selects (rule selectors, webhook selectors, minus the
    excluded namespaces) is guarded, and reaches a webhook entry, which the server answers with the policy;
    a Pod the guard checks is never one the webhook cannot see."""
    config = find(guarded, "MutatingWebhookConfiguration")
    rules = {r["name"]: r for r in yaml.safe_load((CHART / "ci" / "guard-values.yaml").read_text())["policy"]["rules"]}
    namespaces = [namespace("prod", {"env": "prod"}), namespace("prod2", {"env": "prod", **OPT_IN}),
                  namespace("shop"), namespace("shop2", OPT_IN), *[namespace(n, {"env": "prod"}) for n in EXCLUDED]]
    pods = [{}, {"tail": "yes"}, {"batch": "true"}, {"tail": "yes", "batch": "true"}]
    for ns in namespaces:
        for labels in pods:
            for asked in ({}, {INJECT: "log-shipper"}):
                request = create(pod(ns["metadata"]["name"], labels=labels, annotations=asked), ns)
                for name, guard in guards(guarded).items():
                    rule = rules[name]
                    selected = (ns["metadata"]["name"] not in EXCLUDED
                                and selector_matches(rule.get("namespaceSelector"), ns["metadata"]["labels"])
                                and selector_matches(rule.get("podSelector"), labels))
                    assert guard.applies(request) == selected, (name, ns["metadata"]["name"], labels)
                    if selected:
                        assert called(config, request), (name, ns["metadata"]["name"], labels)


def test_a_mandatory_entry_whose_containers_the_guard_cannot_know_is_refused_at_render(tmp_path):
    values = tmp_path / "values.yaml"
    entry = {"apiVersion": "podpatterns.io/v1alpha1", "kind": "PatternTemplate", "metadata": {"name": "pinned"},
             "spec": {"pattern": "sidecar", "parameters": [{"name": "tag", "type": "string", "default": "1.37"}],
                      "containers": [{"name": "pinned", "image": "busybox:${params.tag}"}]}}
    policy = {"rules": [{"name": "all", "inject": ["pinned"], "mandatory": True}]}
    values.write_text(yaml.safe_dump({"policyGuard": {"enabled": True}, "catalogue": {"pinned": entry}, "policy": policy}))
    done = helm("template", "pp", str(CHART), "-f", str(values))
    assert done.returncode != 0 and 'container "pinned" of entry pinned has no fixed name and image' in done.stderr
    values.write_text(yaml.safe_dump({"policyGuard": {"enabled": True},
                                      "policy": {"rules": [{"name": "all", "inject": ["nowhere"], "mandatory": True}]}}))
    done = helm("template", "pp", str(CHART), "-f", str(values))
    assert done.returncode != 0 and "rule all makes nowhere mandatory, but its containers are unknown" in done.stderr
    # Without the guard nothing needs them.
    values.write_text(yaml.safe_dump({"catalogue": {"pinned": entry}, "policy": policy}))
    assert helm("template", "pp", str(CHART), "-f", str(values)).returncode == 0


# --- The rendered chart's server, for real: every entry gets the caBundle, UPDATE reviews are answered

@pytest.mark.slow
def test_the_server_trusts_every_webhook_entry_and_answers_the_update_entrys_reviews(tmp_path):
    import base64
    import time

    from tests.helpers import apply, ops_of, review
    from tests.kubeapi import KubeApi
    from tests.test_chart_server import Deployment, pod_review, seed

    docs = render(GUARD_VALUES)
    names = [w["name"] for w in find(docs, "MutatingWebhookConfiguration")["webhooks"]]
    assert len(names) == 5
    path = f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{FULLNAME}"
    with KubeApi() as api:
        seed(api, docs)
        deployment = Deployment(docs, tmp_path, api)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert deployment.process.poll() is None, deployment.log.read_text()
                webhooks = api.get(path)["webhooks"]
                if all("caBundle" in w["clientConfig"] for w in webhooks):
                    break
                time.sleep(0.2)
            bundles = {w["name"]: w["clientConfig"].get("caBundle") for w in api.get(path)["webhooks"]}
            assert list(bundles) == names and len(set(bundles.values())) == 1 and None not in bundles.values(), bundles
            client = deployment.wait_ready(base64.b64decode(next(iter(bundles.values()))))
            # A prod Pod, as the prod-everything entry sends it (seed labels the Namespace shop env=prod).
            body = pod_review("shop")
            injected = apply(body["request"]["object"], ops_of(client.mutate(body)))
            assert STATUS in injected["metadata"]["annotations"]
            # What update.podpatterns.io sends: the same path, operation UPDATE, old and new object.
            change = review("pod-update-annotate")
            change["request"].update(namespace="shop", oldObject=injected)
            relabelled = copy.deepcopy(injected)
            relabelled["metadata"].setdefault("labels", {})["version"] = "2"
            change["request"]["object"] = relabelled
            answer = client.mutate(change)
            assert answer["allowed"] is True and "patch" not in answer
            change["request"]["object"] = _swapped(injected, "log-shipper", "busybox:1.36")
            answer = client.mutate(change)
            assert answer["allowed"] is False and "log-shipper" in answer["status"]["message"]
            client.close()
        finally:
            deployment.stop()


def test_a_catalogue_entry_that_overrides_a_built_in_is_what_the_guard_requires(tmp_path):
    # A registry mirror: the built-in log-shipper with the mirrored image, under the same name.
    mirrored = (ROOT / "webhook" / "catalog" / "builtin" / "log-shipper.yaml").read_text().replace(
        "image: cr.fluentbit.io/fluent/fluent-bit:3.2.10", "image: mirror.example.com/fluent-bit:3.2.10")
    assert "mirror.example.com" in mirrored
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policyGuard": {"enabled": True}, "catalogue": {"log-shipper": mirrored},
                                      "policy": {"rules": [{"name": "logs", "inject": ["log-shipper"], "mandatory": True}]}}))
    docs = render([], "-f", str(values))
    injected = _injected(tmp_path, docs, [namespace("shop"), pod()])
    assert _container(injected, "log-shipper")["image"] == "mirror.example.com/fluent-bit:3.2.10"
    guard = guards(docs)["logs"]
    shop = namespace("shop")
    assert guard.admits(create(injected, shop)) is True
    assert guard.admits(create(_swapped(injected, "log-shipper", "cr.fluentbit.io/fluent/fluent-bit:3.2.10"), shop)) is False


def test_the_configuration_serve_prints_has_the_charts_safe_scope():
    """`podpatterns serve` prints a url-mode configuration for development; it must not be cluster-wide either."""
    from webhook.cluster.webhookconfig import mutating_webhook_configuration

    printed = mutating_webhook_configuration("https://127.0.0.1:8443/mutate", "Y2E=")
    shop, enabled = namespace("shop"), namespace("team", {"podpatterns.io/injection": "enabled"})
    assert called(printed, create(pod("shop"), shop)) == []
    assert admitted_while_down(printed, create(pod("shop"), shop))
    assert called(printed, create(pod("shop", annotations={"podpatterns.io/inject": "log-shipper"}), shop)) == [
        "inject.podpatterns.io"]
    assert called(printed, create(pod("team"), enabled)) == ["namespace.inject.podpatterns.io"]
    injected = pod("shop", annotations={"podpatterns.io/status": "[]"})
    assert called(printed, update(injected, injected, shop)) == ["update.podpatterns.io"]
    assert called(printed, update(pod("shop"), pod("shop"), shop)) == []
    for system in ("kube-system", "kube-public", "kube-node-lease"):
        assert called(printed, create(pod(system, annotations={"podpatterns.io/inject": "x"}), namespace(system))) == []
