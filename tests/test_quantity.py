"""Resource parameters: the `quantity` type, the built-ins' cpu/memory parameters and their bounds."""

from __future__ import annotations

import pytest

from tests.helpers import apply, assert_valid_pod
from webhook.catalog import catalogue
from webhook.core import engine
from webhook.core.parameters import Parameter, ParameterError

MEMORY = Parameter.declare({"name": "memoryLimit", "type": "quantity", "default": "128Mi", "minimum": "32Mi",
                            "maximum": "4Gi"})
CATALOGUE = catalogue.load()


@pytest.mark.parametrize("text", ["32Mi", "256Mi", "4Gi", "0.5Gi", "134217728", "1e8", "268435456000m", "+64Mi"])
def test_quantities_the_apiserver_accepts_within_bounds_are_accepted(text):
    assert MEMORY.parse(text) == text


@pytest.mark.parametrize("text", [
    "16Mi", "5Gi", "-64Mi", "64MB", "64 Mi", " 64Mi", "64Mi\n  privileged: true", "0x40", "1.2.3Mi", "Mi", "",
    "64mi", "1e", "9" * 70, "64Mi$(id)", "${params.x}",
])
def test_anything_else_is_refused_naming_the_bounds(text):
    with pytest.raises(ParameterError, match=r"expected a Kubernetes quantity \(e.g. 128Mi, 250m\) from 32Mi to 4Gi"):
        MEMORY.parse(text)


@pytest.mark.parametrize("spec, error", [
    ({"minimum": 32}, "minimum must be a quantity"),
    ({"maximum": "lots"}, "maximum must be a quantity"),
    ({"default": "8Gi", "maximum": "4Gi"}, "default/enum value '8Gi'"),
    ({"default": 128}, "default/enum value 128"),
])
def test_a_bad_quantity_declaration_is_refused(spec, error):
    with pytest.raises(ParameterError, match=error):
        Parameter.declare({"name": "memoryLimit", "type": "quantity", **spec})


def test_the_builtins_expose_todays_resources_as_bounded_parameters():
    for name, memory in (("log-shipper", "32Mi"), ("json-log-adapter", "32Mi"), ("db-ambassador", "16Mi")):
        entry = CATALOGUE[name]
        assert {p: entry.parameters[p].type for p in ("cpuRequest", "memoryRequest", "cpuLimit", "memoryLimit")} == \
            dict.fromkeys(("cpuRequest", "memoryRequest", "cpuLimit", "memoryLimit"), "quantity")
        assert entry.parameters["memoryRequest"].default == memory
        assert entry.parameters["memoryLimit"].maximum == "4Gi"


def pod(**annotations: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "annotations": {
        "podpatterns.io/inject": "db-ambassador", "db-ambassador.podpatterns.io/upstream": "pg:5432", **annotations}},
        "spec": {"containers": [{"name": "web", "image": "example/web:1"}]}}


def test_a_pod_sets_the_injected_containers_resources_within_the_bounds():
    asked = pod(**{"db-ambassador.podpatterns.io/memoryLimit": "512Mi", "db-ambassador.podpatterns.io/cpuRequest": "50m"})
    plan = engine.plan(asked, CATALOGUE, engine.Settings())
    assert plan.denial is None
    injected = apply(asked, plan.ops)
    assert_valid_pod(injected)
    ambassador = next(c for c in injected["spec"]["initContainers"] if c["name"] == "db-ambassador")
    assert ambassador["resources"]["limits"] == {"cpu": "250m", "memory": "512Mi"}
    assert ambassador["resources"]["requests"]["cpu"] == "50m"


def test_a_request_above_its_limit_is_denied_naming_each_value_and_where_it_came_from():
    plan = engine.plan(pod(**{"db-ambassador.podpatterns.io/memoryRequest": "256Mi"}), CATALOGUE, engine.Settings())
    assert plan.denial == (
        "db-ambassador: container db-ambassador: memory request 256Mi is above its limit 128Mi, which the apiserver "
        "refuses; its resource parameters: cpuRequest = 10m (default), memoryRequest = 256Mi (annotation "
        "db-ambassador.podpatterns.io/memoryRequest), cpuLimit = 250m (default), memoryLimit = 128Mi (default)")


def test_a_namespace_environment_sizes_the_sidecars_for_a_limitrange_strict_namespace(tmp_path):
    """A LimitRange that wants at least 64Mi requests: the environment gives them, the Pod says nothing."""
    from webhook.catalog import policy

    (tmp_path / "policy.yaml").write_text(
        "apiVersion: podpatterns.io/v1alpha1\nkind: Policy\nspec:\n  environments:\n    parameters:\n      strict:\n"
        "        log-shipper: {memoryRequest: 64Mi, memoryLimit: 192Mi, cpuRequest: 20m}\n")
    rules = policy.load(tmp_path / "policy.yaml", CATALOGUE)
    sent = pod()
    sent["metadata"]["annotations"] = {"podpatterns.io/inject": "log-shipper"}
    plan = engine.plan(sent, CATALOGUE, engine.Settings(), "shop", "",
                       engine.NamespaceInfo("shop", {"env": "strict"}), rules)
    shipper = next(c for c in apply(sent, plan.ops)["spec"]["initContainers"] if c["name"] == "log-shipper")
    assert shipper["resources"]["requests"]["memory"] == "64Mi" and shipper["resources"]["requests"]["cpu"] == "20m"
    assert shipper["resources"]["limits"]["memory"] == "192Mi"
    decision = next(d for d in plan.decisions if d.entry == "log-shipper")
    assert decision.parameters["memoryLimit"] == ("192Mi", "environment strict (namespace label env)")
