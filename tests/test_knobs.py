"""The knobs a platform team sets without copying an entry: the registry rewrite and image pull secrets."""

from __future__ import annotations

import pytest

from tests.helpers import apply, assert_valid_pod
from webhook.catalog import catalogue
from webhook.cli import commands as cli
from webhook.core import engine
from webhook.core.images import with_registry

CATALOGUE = catalogue.load()
AIR_GAPPED = engine.Settings(image_registry="registry.internal", image_pull_secrets=("internal-registry",))


@pytest.mark.parametrize("image, expected", [
    ("cr.fluentbit.io/fluent/fluent-bit:3.2.10", "registry.internal/fluent/fluent-bit:3.2.10"),
    ("alpine/socat:1.8.0.3", "registry.internal/alpine/socat:1.8.0.3"),  # Docker Hub's
    ("busybox", "registry.internal/library/busybox"),
    ("cr.fluentbit.io/fluent/fluent-bit@sha256:" + "a" * 64, "registry.internal/fluent/fluent-bit@sha256:" + "a" * 64),
    ("localhost:5000/tools/socat:1", "registry.internal/tools/socat:1"),
    ("ghcr.io/org/tool:1@sha256:" + "b" * 64, "registry.internal/org/tool:1@sha256:" + "b" * 64),
])
def test_the_registry_is_replaced_and_repository_tag_and_digest_kept(image, expected):
    assert with_registry(image, "registry.internal") == expected
    assert with_registry(image, None) == image


def pod(**spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop",
                                                            "annotations": {"podpatterns.io/inject": "log-shipper"}},
            "spec": {"containers": [{"name": "web", "image": "example/web:1"}], **spec}}


def test_an_air_gapped_pod_pulls_every_injected_image_from_the_registry_with_its_secret():
    sent = pod(imagePullSecrets=[{"name": "app"}])
    plan = engine.plan(sent, CATALOGUE, AIR_GAPPED)
    injected = apply(sent, plan.ops)
    assert_valid_pod(injected)
    images = [c["image"] for c in injected["spec"]["initContainers"]]
    assert images == ["registry.internal/fluent/fluent-bit:3.2.10"]
    assert injected["spec"]["imagePullSecrets"] == [{"name": "app"}, {"name": "internal-registry"}]
    assert "log-shipper: images from registry registry.internal (--image-registry): " \
           "registry.internal/fluent/fluent-bit:3.2.10" in plan.notes
    # Reinvocation and `kubectl get -o yaml | kubectl apply` copies: the rewritten image is what the entry holds.
    assert engine.plan(injected, CATALOGUE, AIR_GAPPED).ops == []
    # A server without the rewrite sees another image: the claim does not hold, it injects afresh in place.
    again = engine.plan(injected, CATALOGUE, engine.Settings())
    assert any("image" in w and "injected afresh" in w for w in again.warnings), again.warnings


def test_pull_secrets_merge_by_name_and_the_pods_own_are_kept():
    settings = engine.Settings(image_pull_secrets=("internal-registry", "app", "internal-registry"))
    injected = apply(pod(imagePullSecrets=[{"name": "app"}]), engine.plan(pod(imagePullSecrets=[{"name": "app"}]),
                                                                          CATALOGUE, settings).ops)
    assert injected["spec"]["imagePullSecrets"] == [{"name": "app"}, {"name": "internal-registry"}]
    created = apply(pod(), engine.plan(pod(), CATALOGUE, settings).ops)
    assert created["spec"]["imagePullSecrets"] == [{"name": "internal-registry"}, {"name": "app"}]
    # Nothing injected, nothing added.
    untouched = pod()
    untouched["metadata"]["annotations"] = {}
    assert engine.plan(untouched, CATALOGUE, settings).ops == []


def test_a_malformed_pull_secret_list_is_denied_clearly():
    plan = engine.plan(pod(imagePullSecrets="regcred"), CATALOGUE, AIR_GAPPED)
    assert plan.denial == "spec.imagePullSecrets must be a list of {name: SECRET}"


ENTRY = """apiVersion: podpatterns.io/v1alpha1
kind: PatternTemplate
metadata: {name: tailer}
spec:
  pattern: sidecar
  imagePullSecrets: %s
  containers:
  - name: tailer
    image: registry.vendor.example/tailer:1
    resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {cpu: 50m, memory: 32Mi}}
"""


def test_an_entry_brings_its_own_pull_secrets(tmp_path):
    (tmp_path / "tailer.yaml").write_text(ENTRY % "[{name: vendor-registry}]")
    entries = catalogue.load([tmp_path])
    sent = pod(imagePullSecrets=[{"name": "vendor-registry"}])
    sent["metadata"]["annotations"]["podpatterns.io/inject"] = "tailer,log-shipper"
    injected = apply(sent, engine.plan(sent, entries, AIR_GAPPED).ops)
    assert injected["spec"]["imagePullSecrets"] == [{"name": "vendor-registry"}, {"name": "internal-registry"}]


@pytest.mark.parametrize("value", ["regcred", "[{name: Bad_Name}]", "[{name: ok, extra: 1}]", "[name]"])
def test_a_bad_entry_pull_secret_list_is_refused_at_load(tmp_path, value):
    (tmp_path / "tailer.yaml").write_text(ENTRY % value)
    with pytest.raises(catalogue.CatalogueError, match="imagePullSecrets"):
        catalogue.load([tmp_path])


def test_explain_shows_the_rewritten_images(tmp_path, capsys):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations: {podpatterns.io/inject: "
                        "log-shipper}\nspec:\n  containers: [{name: web, image: example/web:1}]\n")
    assert cli.main(["explain", "-f", str(manifest), "--image-registry", "registry.internal:5000/mirror"]) == 0
    out = capsys.readouterr().out
    assert "  log-shipper: images from registry registry.internal:5000/mirror (--image-registry): " \
           "registry.internal:5000/mirror/fluent/fluent-bit:3.2.10" in out


@pytest.mark.parametrize("flag, value", [("--image-registry", "https://registry.internal"),
                                          ("--image-registry", "Registry.Internal"),
                                          ("--image-pull-secret", "Bad_Secret")])
def test_a_bad_knob_is_refused_on_the_command_line(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["explain", "-f", str(tmp_path / "none.yaml"), flag, value])
    assert exit_code.value.code == 2
    assert "must be" in capsys.readouterr().err
