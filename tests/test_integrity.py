"""Policy integrity, tried the way someone getting round it would (README, "Policy integrity"): a forged
status annotation, a look-alike container, an UPDATE that swaps an injected image. Through the HTTP
endpoint with the recorded reviews as envelopes, and `podpatterns explain`."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from tests.helpers import apply, assert_valid_pod, ops_of, review
from webhook.cli import commands as cli

STATUS = "podpatterns.io/status"
FORGED = '[{"entry":"log-shipper","pattern":"sidecar","digest":"sha256:0"}]'
SHIPPER_IMAGE = "cr.fluentbit.io/fluent/fluent-bit:3.2.10"


def app_pod(annotations: dict[str, str], init: list | None = None) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "prod", "annotations": annotations},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}
    if init is not None:
        pod["spec"]["initContainers"] = init
    return pod


def create(server, pod: dict) -> tuple[dict, dict | None]:
    body = review("pod-create-annotated")
    body["request"]["object"] = copy.deepcopy(pod)
    response = server.mutate(body).json()["response"]
    return response, (apply(pod, ops_of(response)) if response.get("patch") else None)


def update(server, old: dict, new: dict, sub_resource: str | None = None) -> dict:
    body = review("pod-update-annotate")
    body["request"]["oldObject"], body["request"]["object"] = copy.deepcopy(old), copy.deepcopy(new)
    if sub_resource:
        body["request"]["subResource"] = sub_resource
    reply = server.mutate(body)
    assert reply.status_code == 200, reply.text
    return reply.json()["response"]


def containers(pod: dict) -> dict[str, dict]:
    return {c["name"]: c for key in ("initContainers", "containers") for c in pod["spec"].get(key, [])}


def injected(server, annotations: dict[str, str]) -> dict:
    response, pod = create(server, app_pod(annotations))
    assert response["allowed"] and pod is not None, response
    return pod


def with_apiserver_defaults(pod: dict) -> dict:
    """The Pod as `kubectl get -o yaml` shows it: the apiserver's defaults filled in everywhere."""
    pod = copy.deepcopy(pod)
    for container in containers(pod).values():
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        for var in container.get("env", []):
            if "fieldRef" in var.get("valueFrom", {}):
                var["valueFrom"]["fieldRef"].setdefault("apiVersion", "v1")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                container[probe].setdefault("successThreshold", 1)
    for volume in pod["spec"].get("volumes", []):
        if "downwardAPI" in volume:
            volume["downwardAPI"].setdefault("defaultMode", 420)
            for item in volume["downwardAPI"]["items"]:
                item["fieldRef"].setdefault("apiVersion", "v1")
    pod["spec"].update(dnsPolicy="ClusterFirst", restartPolicy="Always", schedulerName="default-scheduler",
                       terminationGracePeriodSeconds=30, enableServiceLinks=True)
    pod["metadata"].update(uid="5f0e3c2a-0000-4000-8000-000000000001", resourceVersion="4711")
    return pod


# -- CREATE: a status claim is verified ----------------------------------------------------------------

def test_a_forged_status_without_the_container_gets_the_entry_injected(server):
    response, pod = create(server, app_pod({"podpatterns.io/inject": "log-shipper", STATUS: FORGED}))
    assert response["allowed"] and pod is not None
    assert containers(pod)["log-shipper"]["image"] == SHIPPER_IMAGE
    assert json.loads(pod["metadata"]["annotations"][STATUS])[0]["digest"] != "sha256:0"
    assert any("claims it" in w and "has no container log-shipper" in w for w in response["warnings"])
    assert_valid_pod(pod)


def test_a_look_alike_native_sidecar_is_replaced_by_the_real_one(server):
    look_alike = [{"name": "log-shipper", "image": "busybox:1.36", "restartPolicy": "Always",
                   "command": ["sleep", "infinity"]}]
    response, pod = create(server, app_pod({"podpatterns.io/inject": "log-shipper", STATUS: FORGED}, look_alike))
    assert response["allowed"] and pod is not None
    shipper = containers(pod)["log-shipper"]
    assert shipper["image"] == SHIPPER_IMAGE and "command" in shipper and shipper["command"] != ["sleep", "infinity"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["log-shipper"], "replaced where it stood, not added"
    assert any("busybox:1.36" in w for w in response["warnings"])
    assert_valid_pod(pod)
    # And what came out is verified: asking again changes nothing.
    again, _ = create(server, pod)
    assert again["allowed"] and "patch" not in again


def test_a_look_alike_under_a_mandatory_rule_is_replaced_too(tmp_path, capsys):
    """The same forgery in a prod namespace under the README's mandatory rule, through `podpatterns inject`."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"env": "prod"}}}
    pod = app_pod({STATUS: FORGED}, [{"name": "log-shipper", "image": "busybox:1.36", "restartPolicy": "Always"}])
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all([namespace, pod]))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({"apiVersion": "podpatterns.io/v1alpha1", "kind": "Policy", "spec": {
        "rules": [{"name": "prod-logs", "namespaceSelector": {"matchLabels": {"env": "prod"}}, "inject": ["log-shipper"],
                   "mandatory": True}]}}))
    assert cli.main(["inject", "-f", str(tmp_path / "all.yaml"), "--policy", str(tmp_path / "policy.yaml")]) == 0
    out = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "Pod"][0]
    assert containers(out)["log-shipper"]["image"] == SHIPPER_IMAGE


def test_explain_says_a_claim_did_not_hold_and_why(tmp_path, capsys):
    pod = app_pod({"podpatterns.io/inject": "log-shipper", STATUS: FORGED},
                  [{"name": "log-shipper", "image": "busybox:1.36", "restartPolicy": "Always"}])
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    assert cli.main(["explain", "-f", str(tmp_path / "pod.yaml")]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("  log-shipper: injected, requested by annotation podpatterns.io/inject; annotation "
                           "podpatterns.io/status claims it, digest sha256:0")
    assert "image is 'busybox:1.36', expected 'cr.fluentbit.io/fluent/fluent-bit:3.2.10'; injected afresh" in line


@pytest.mark.parametrize("entries", ["log-shipper", "json-log-adapter", "db-ambassador, log-shipper, json-log-adapter"])
def test_a_pod_copied_from_kubectl_get_gets_no_second_copy_and_no_patch(server, entries):
    annotations = {"podpatterns.io/inject": entries, "db-ambassador.podpatterns.io/upstream": "pg.prod.svc:5432"}
    copied = with_apiserver_defaults(injected(server, annotations))
    response, _ = create(server, copied)
    assert response["allowed"] and "patch" not in response, response


def test_an_offline_inject_applied_by_gitops_is_verified_and_left_alone(server, tmp_path, capsys):
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(app_pod({"podpatterns.io/inject": "log-shipper, json-log-adapter"})))
    assert cli.main(["inject", "-f", str(tmp_path / "pod.yaml")]) == 0
    offline = yaml.safe_load(capsys.readouterr().out)
    response, _ = create(server, offline)
    assert response["allowed"] and "patch" not in response, response


def test_a_pod_injected_from_an_older_catalogue_version_is_injected_afresh(server):
    """Stale, not forged: a Deployment's template injected offline a catalogue version ago. Its new Pods get
    what the catalogue injects now, in place of the old containers (README, "Policy integrity")."""
    pod = injected(server, {"podpatterns.io/inject": "log-shipper"})
    old = copy.deepcopy(pod)
    shipper = containers(old)["log-shipper"]
    shipper["image"] = "cr.fluentbit.io/fluent/fluent-bit:3.1.9"
    shipper["args"] = [a for a in shipper["args"] if a != "read_from_head=true"]
    records = json.loads(old["metadata"]["annotations"][STATUS])
    records[0]["digest"] = "sha256:0123456789abcdef"
    old["metadata"]["annotations"][STATUS] = json.dumps(records)
    response, fresh = create(server, old)
    assert response["allowed"] and fresh is not None
    assert containers(fresh)["log-shipper"] == containers(pod)["log-shipper"]
    assert fresh["metadata"]["annotations"][STATUS] == pod["metadata"]["annotations"][STATUS]
    assert len(fresh["spec"]["initContainers"]) == 1
    assert any("digest sha256:0123456789abcdef; the catalogue's is" in w for w in response["warnings"])


# -- UPDATE: what an entry injected stays -------------------------------------------------------------

@pytest.fixture()
def running(server) -> dict:
    pod = injected(server, {"podpatterns.io/inject": "log-shipper, json-log-adapter"})
    return with_apiserver_defaults(pod)


def test_swapping_an_injected_image_on_a_running_pod_is_denied(server, running):
    swapped = copy.deepcopy(running)
    containers(swapped)["log-shipper"]["image"] = "busybox:1.36"
    response = update(server, running, swapped)
    assert not response["allowed"] and response["status"]["code"] == 403
    message = response["status"]["message"]
    assert "container log-shipper was injected by podpatterns (entry log-shipper)" in message
    assert f"from '{SHIPPER_IMAGE}' to 'busybox:1.36'" in message


@pytest.mark.parametrize("change", ["remove status", "forge status", "edit config annotation"])
def test_editing_what_podpatterns_recorded_or_added_is_denied(server, running, change):
    edited = copy.deepcopy(running)
    annotations = edited["metadata"]["annotations"]
    if change == "remove status":
        del annotations[STATUS]
    elif change == "forge status":
        annotations[STATUS] = FORGED
    else:
        key = "json-log-adapter.config.podpatterns.io/fluent-bit.yaml"
        annotations[key] = annotations[key].replace("name: stdout", "name: null")
    response = update(server, running, edited)
    assert not response["allowed"] and response["status"]["code"] == 403, response


def test_other_updates_of_an_injected_pod_and_its_subresources_are_allowed(server, running):
    labelled = copy.deepcopy(running)
    labelled["metadata"].setdefault("labels", {})["team"] = "checkout"
    labelled["metadata"]["annotations"]["note"] = "hello"
    containers(labelled)["web"]["image"] = "nginx:1.28"  # the app's own container is the owner's business
    response = update(server, running, labelled)
    assert response["allowed"] and "patch" not in response
    debug = copy.deepcopy(running)
    debug["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox:1.36"}]
    containers(debug)["log-shipper"]["image"] = "busybox:1.36"  # not reachable through this subresource, but say so
    assert update(server, running, debug, sub_resource="ephemeralcontainers")["allowed"]


def test_an_update_of_a_pod_without_entries_is_allowed(server):
    plain = app_pod({})
    changed = copy.deepcopy(plain)
    changed["spec"]["containers"][0]["image"] = "nginx:1.28"
    assert update(server, plain, changed)["allowed"]


def test_explain_says_a_claim_holds(server, tmp_path, capsys):
    pod = injected(server, {"podpatterns.io/inject": "log-shipper"})
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(with_apiserver_defaults(pod)))
    assert cli.main(["explain", "-f", str(tmp_path / "pod.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "  log-shipper: not injected, already injected (annotation podpatterns.io/status), and the Pod holds it")
