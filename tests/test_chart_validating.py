"""The chart's ValidatingWebhookConfiguration of PatternTemplates: rendered in every scenario for patterntemplates
only (matched here as the apiserver matches rules: it can never match a Pod), its caBundle in each certificates
mode, the value that turns it off, and the rendered Deployment run for real keeping its caBundle and answering
POST /validate within the chart's RBAC."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import time
from typing import Any

import pytest

from tests.kubeapi import KubeApi
from tests.test_chart import CHART, FULLNAME, NAMESPACE, SCENARIOS, _flags, find, helm, kinds, render
from tests.test_chart_server import Deployment, assert_within_rbac, seed
from tests.test_validate_endpoint import MISTAKES, broken, template_review

WEBHOOK = "patterntemplates.podpatterns.io"
VALIDATING_RBAC = {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                   "resourceNames": [FULLNAME], "verbs": ["get", "patch"]}
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
POD_SUBRESOURCES = ("", "status", "ephemeralcontainers", "resize", "binding", "eviction", "exec", "attach",
                    "portforward", "proxy", "log")


def matches(rule: dict[str, Any], operation: str, group: str, version: str, resource: str, subresource: str,
            namespaced: bool) -> bool:
    """Does a webhook rule match a request, as the apiserver's rule matcher (k8s.io/apiserver, webhook predicates
    rules.Matcher) decides: `*` in operations, groups and versions; `*` all resources, `*/*` and `R/*` their
    subresources too, `*/S` one subresource of all; scope Cluster, Namespaced or `*`."""
    if not ({operation, "*"} & set(rule["operations"]) and {group, "*"} & set(rule["apiGroups"])
            and {version, "*"} & set(rule["apiVersions"])):
        return False
    scope = rule.get("scope", "*")
    if scope != "*" and (scope == "Namespaced") != namespaced:
        return False
    # As its Matcher.resource: "pods" is ("pods", ""), and "*" on either side matches anything there.
    return any(res in (resource, "*") and sub in (subresource, "*")
               for res, _, sub in (pattern.partition("/") for pattern in rule["resources"]))


def configuration(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "ValidatingWebhookConfiguration", FULLNAME)


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(SCENARIOS[request.param])


def test_the_rule_matcher_matches_as_the_apiserver_does():
    pods = {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}
    assert matches(pods, "CREATE", "", "v1", "pods", "", True)
    assert not matches(pods, "CREATE", "", "v1", "pods", "status", True)
    assert not matches(pods, "UPDATE", "", "v1", "pods", "", True)
    everything = {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"], "scope": "*"}
    assert matches(everything, "CONNECT", "", "v1", "pods", "exec", True)
    assert matches({**everything, "resources": ["*"]}, "CREATE", "", "v1", "pods", "", True)
    assert not matches({**everything, "resources": ["*"]}, "CREATE", "", "v1", "pods", "status", True)
    assert matches({**everything, "resources": ["pods/*"]}, "CREATE", "", "v1", "pods", "binding", True)
    assert not matches({**everything, "scope": "Cluster"}, "CREATE", "", "v1", "pods", "", True)


def test_it_is_rendered_for_patterntemplates_only_and_can_never_match_a_pod(scenario):
    _, docs = scenario
    webhooks = configuration(docs)["webhooks"]
    assert [w["name"] for w in webhooks] == [WEBHOOK]
    rules = webhooks[0]["rules"]
    assert rules == [{"operations": ["CREATE", "UPDATE", "DELETE"], "apiGroups": ["podpatterns.io"],
                      "apiVersions": ["v1alpha1"], "resources": ["patterntemplates"], "scope": "Cluster"}]
    for rule, operation, subresource in itertools.product(rules, OPERATIONS, POD_SUBRESOURCES):
        assert not matches(rule, operation, "", "v1", "pods", subresource, True), (operation, subresource)
    for operation in ("CREATE", "UPDATE", "DELETE"):
        assert matches(rules[0], operation, "podpatterns.io", "v1alpha1", "patterntemplates", "", False)
    # The status the server writes never comes back to it, nor does any other kind of the group.
    assert not matches(rules[0], "UPDATE", "podpatterns.io", "v1alpha1", "patterntemplates", "status", False)
    assert not matches(rules[0], "CREATE", "podpatterns.io", "v1alpha1", "policies", "", False)


def test_it_calls_the_same_service_like_the_mutating_configuration(scenario):
    _, docs = scenario
    webhook = configuration(docs)["webhooks"][0]
    mutating = find(docs, "MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]
    assert webhook["clientConfig"]["service"] == {**mutating["clientConfig"]["service"], "path": "/validate"}
    assert webhook["failurePolicy"] == "Fail"  # whatever webhook.failurePolicy: it can never block a Pod
    assert webhook["sideEffects"] == "None" and webhook["matchPolicy"] == "Equivalent"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["timeoutSeconds"] == mutating["timeoutSeconds"]
    assert "namespaceSelector" not in webhook and "objectSelector" not in webhook  # cluster-scoped objects


def test_its_ca_bundle_comes_as_the_mutating_configurations_in_each_certificates_mode(scenario):
    name, docs = scenario
    validating, mutating = configuration(docs), find(docs, "MutatingWebhookConfiguration", FULLNAME)
    assert validating["metadata"].get("annotations") == mutating["metadata"].get("annotations")
    assert validating["webhooks"][0]["clientConfig"].get("caBundle") == mutating["webhooks"][0]["clientConfig"].get("caBundle")
    args = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    mode = "certManager" if name.startswith("cert-manager") else "existingSecret" if name == "existing-secret" else "selfManaged"
    if mode == "selfManaged":
        # Never rendered: the server patches it in, as into the mutating configuration, and helm upgrade keeps it.
        assert "caBundle" not in validating["webhooks"][0]["clientConfig"]
        assert f"--validating-webhook-configuration={FULLNAME}" in args
        assert VALIDATING_RBAC in find(docs, "ClusterRole")["rules"]
    else:
        assert not any(a.startswith("--validating-webhook-configuration") for a in args)
        assert VALIDATING_RBAC not in find(docs, "ClusterRole")["rules"]
    if mode == "certManager":
        assert validating["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-serving"}


@pytest.mark.parametrize("mode", ["default", "cert-manager", "existing-secret"])
def test_it_can_be_turned_off(mode):
    docs = render([*SCENARIOS[mode], "patternTemplateValidation.enabled=false"])
    assert "ValidatingWebhookConfiguration" not in kinds(docs)
    args = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--validating-webhook-configuration") for a in args)
    assert VALIDATING_RBAC not in find(docs, "ClusterRole")["rules"]


def test_its_failure_policy_is_a_value_and_a_misspelt_one_is_refused():
    webhook = configuration(render(["patternTemplateValidation.failurePolicy=Ignore"]))["webhooks"][0]
    assert webhook["failurePolicy"] == "Ignore"
    done = helm("template", "pp", str(CHART), "-n", NAMESPACE, *_flags(["patternTemplateValidation.failurePolicy=fail"]))
    assert done.returncode != 0 and "patternTemplateValidation" in done.stderr and "failurePolicy" in done.stderr


@pytest.mark.slow
def test_the_server_keeps_its_ca_bundle_and_refuses_a_broken_patterntemplate_within_the_rbac(tmp_path):
    docs = render(SCENARIOS["default"])
    path = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{FULLNAME}"
    with KubeApi() as api:
        seed(api, docs)
        api.put(copy.deepcopy(configuration(docs)), path)
        deployment = Deployment(docs, tmp_path, api)
        try:
            secret_path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{FULLNAME}-tls"
            deadline = time.monotonic() + 60
            while (api.get(path)["webhooks"][0]["clientConfig"].get("caBundle") is None
                   and time.monotonic() < deadline):
                assert deployment.process.poll() is None, deployment.log.read_text()
                time.sleep(0.2)
            ca = base64.b64decode(api.get(secret_path)["data"]["ca.crt"])
            webhook = api.get(path)["webhooks"][0]
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca
            client = deployment.wait_ready(ca)
            # The apiserver calls the Service at the rendered path with the AdmissionReview.
            body = template_review("create", broken(MISTAKES[3][1]))
            reply = client.http.post(webhook["clientConfig"]["service"]["path"], content=json.dumps(body),
                                     extensions={"sni_hostname": f"{FULLNAME}.{NAMESPACE}.svc"})
            response = reply.json()["response"]
            assert response["allowed"] is False and response["status"]["code"] == 400
            assert response["status"]["message"].startswith("patterntemplate/trace-agent:")
            assert "spec.containers[0].restartPolicy: set spec.lifecycle instead of a container restartPolicy" in \
                response["status"]["message"]
            client.close()
        finally:
            deployment.stop()
        used = assert_within_rbac(api, docs)
    assert {("get", "admissionregistration.k8s.io", "validatingwebhookconfigurations"),
            ("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations")} <= used
