"""`podpatterns selftest` (the chart's helm test): a dry-run create through the stand-in API, whose admission is a real
`podpatterns serve` answering the AdmissionReview the apiserver would send."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from tests.helpers import Server, apply, ops_of, review
from tests.kubeapi import ApiError, KubeApi, Location
from webhook.cli import commands as cli


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("selftest"), "--quiet")
    yield running
    running.stop()


def admission(server: Server, in_scope: tuple[str, ...] = ("default",)):
    """What the apiserver does with a Pod create: for a namespace in the webhook's scope, send the AdmissionReview
    (dryRun true) and apply the patch, or refuse with the webhook's message."""

    def admit(location: Location, obj: dict[str, Any]) -> dict[str, Any]:
        if location.namespace not in in_scope:
            return obj  # no webhook matches: created as sent
        body = review("pod-create-dryrun")
        body["request"].update(uid=str(uuid.uuid4()), name=obj["metadata"]["name"], namespace=location.namespace,
                               object=copy.deepcopy(obj))
        answer = server.mutate(body).json()["response"]
        if not answer["allowed"]:
            raise ApiError(400, "BadRequest", "admission webhook \"inject.podpatterns.io\" denied the request: "
                           + answer["status"]["message"])
        return apply(obj, ops_of(answer)) if answer.get("patch") else obj

    return admit


def selftest(api: KubeApi, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["selftest", "--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig")), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_pod_the_webhook_injects_passes(webhook, tmp_path, capsys):
    with KubeApi(admit=admission(webhook)) as api:
        code, out = selftest(api, tmp_path, capsys)
        created = [r for r in api.requested("POST") if r.path == "/api/v1/namespaces/default/pods"]
        assert not [path for path in api.objects if "/pods/" in path]  # a dry run stores nothing
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "✔ a dry-run Pod in namespace default asking for log-shipper came back injected with log-shipper"
    assert lines[1].startswith('    podpatterns.io/status: [{"entry":"log-shipper","pattern":"sidecar","digest":"sha256:')
    assert lines[2] == "    containers added: initContainers/log-shipper"
    # One dry-run create: nothing stored, a generated name, a Pod that Pod Security "restricted" admits.
    assert [r.query.get("dryRun") for r in created] == [["All"]]
    assert created[0].body["metadata"]["generateName"] == "podpatterns-selftest-"
    assert created[0].body["metadata"]["annotations"] == {"podpatterns.io/inject": "log-shipper"}


def test_a_pod_outside_the_webhooks_scope_fails(webhook, tmp_path, capsys):
    with KubeApi(admit=admission(webhook, in_scope=())) as api:
        code, out = selftest(api, tmp_path, capsys, "--namespace", "elsewhere")
    assert code == 1
    assert out.startswith("✘ a dry-run Pod in namespace elsewhere asking for log-shipper came back without the annotation "
                          "podpatterns.io/status: the webhook was not called for it (is namespace elsewhere in its scope?)")
    assert "    hint: podpatterns check -n RELEASE_NAMESPACE" in out


def test_a_denial_fails_with_the_webhooks_message(webhook, tmp_path, capsys):
    with KubeApi(admit=admission(webhook)) as api:
        code, out = selftest(api, tmp_path, capsys, "--entry", "no-such-entry")
    assert code == 1
    assert out.startswith("✘ a dry-run Pod in namespace default asking for no-such-entry refused at admission: admission "
                          "webhook \"inject.podpatterns.io\" denied the request: ")
    assert "no-such-entry" in out.splitlines()[0]


def test_a_webhook_that_cannot_be_called_fails(tmp_path, capsys):
    def down(location: Location, obj: dict[str, Any]) -> dict[str, Any]:
        raise ApiError(500, "InternalError", 'Internal error occurred: failed calling webhook "inject.podpatterns.io": '
                       'failed to call webhook: Post "https://pp-podpatterns.platform.svc:443/mutate?timeout=5s": '
                       "no endpoints available for service \"pp-podpatterns\"")

    with KubeApi(admit=down) as api:
        code, out = selftest(api, tmp_path, capsys)
    assert code == 1
    assert "refused at admission: Internal error occurred: failed calling webhook" in out


def test_without_permission_it_cannot_ask(tmp_path, capsys):
    with KubeApi() as api:
        api.fault("POST", "/api/v1/namespaces/default/pods", status=403, reason="Forbidden",
                  message='pods is forbidden: User "system:serviceaccount:platform:pp-podpatterns-test" cannot create '
                          'resource "pods" in API group "" in the namespace "default"')
        code, out = selftest(api, tmp_path, capsys)
    assert code == 2
    assert out.startswith("podpatterns selftest: forbidden: pods is forbidden: User")
