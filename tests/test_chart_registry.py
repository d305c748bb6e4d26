"""The chart's `settings.image-registry` and `settings.image-pull-secret`: accepted by values.schema.json, handed to
the server as its flags, and the guard (policyGuard) requires the images as the server rewrites them — checked on
the rendered CEL against webhook/core/images.py's rule, and by evaluating the guard (cel-python, as the apiserver
would) on a Pod `podpatterns inject --image-registry` injected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_chart import CHART, FULLNAME, NAMESPACE, SCENARIOS, _flags, find, helm, render
from tests.test_chart_scope import PROD, _injected, create, guards, pod
from webhook.core.images import with_registry

GUARD = SCENARIOS["guard-everything"]  # every built-in mandatory in prod, the catalogue's tailer for tail=yes
# Images of every shape the rule tells apart: a registry with a dot, with a port, localhost, Docker Hub with an
# organisation, a one-component Docker Hub name, a pinned digest.
SHAPES = {"dotted": "quay.io/prometheus/node-exporter:v1.8.2", "port": "registry.example:5000/team/tool:1.0",
          "localhost": "localhost/tools/probe:2", "hub": "alpine/socat:1.8.0.3", "single": "busybox:1.37",
          "digest": "ghcr.io/example/agent@sha256:" + "a" * 64}
REGISTRIES = ["registry.internal", "registry.internal:5000/mirror", "localhost:5000", "mirror.example/a/b"]


def _required_images(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Guard (rule) -> the `c.name == '…' && … c.image == '…'` pairs its CEL requires."""
    found = {}
    for name, guard in guards(docs).items():
        holds = next(v["expression"] for v in guard.policy["spec"]["variables"] if v["name"] == "holds")
        found[name] = set(re.findall(r"c\.name == '([^']+)' && has\(c\.image\) && c\.image == '([^']+)'", holds))
    return found


def _shapes_values(tmp_path: Path) -> Path:
    """A catalogue entry with a container of each image shape, made mandatory for Pods labelled shapes=yes."""
    containers = [{"name": name, "image": image} for name, image in SHAPES.items()]
    values = tmp_path / "shapes.yaml"
    values.write_text(yaml.safe_dump({
        "catalogue": {"shapes": {"apiVersion": "podpatterns.io/v1alpha1", "kind": "PatternTemplate",
                                 "metadata": {"name": "shapes"}, "spec": {"pattern": "sidecar", "containers": containers}}},
        "policy": {"rules": [{"name": "shapes", "podSelector": {"matchLabels": {"shapes": "yes"}}, "inject": ["shapes"],
                              "mandatory": True}]},
        "policyGuard": {"enabled": True}}))
    return values


@pytest.mark.parametrize("registry", REGISTRIES)
def test_the_guard_requires_every_image_as_the_server_rewrites_it(tmp_path, registry):
    docs = render([], "-f", str(_shapes_values(tmp_path)), "--set", f"settings.image-registry={registry}")
    assert _required_images(docs)["shapes"] == {(name, with_registry(image, registry)) for name, image in SHAPES.items()}
    message = guards(docs)["shapes"].policy["spec"]["validations"][0]["message"]
    assert f"single (image {registry}/library/busybox:1.37)" in message
    assert f"{registry}/example/agent@sha256:{'a' * 64}" in message  # the digest still pins


def test_without_a_registry_the_guard_requires_the_catalogues_images(tmp_path):
    docs = render([], "-f", str(_shapes_values(tmp_path)))
    assert _required_images(docs)["shapes"] == set(SHAPES.items())
    assert _required_images(render(GUARD))["prod-everything"] == {
        ("log-shipper", "cr.fluentbit.io/fluent/fluent-bit:3.2.10"),
        ("json-log-adapter", "cr.fluentbit.io/fluent/fluent-bit:3.2.10"),
        ("db-ambassador", "alpine/socat:1.8.0.3")}


@pytest.fixture(scope="module")
def mirrored() -> list[dict[str, Any]]:
    return render(GUARD, "--set", "settings.image-registry=registry.internal/mirror")


def test_the_guard_admits_a_pod_injected_from_the_mirror_and_denies_one_with_the_public_images(tmp_path, mirrored):
    plain = pod("prod")
    from_mirror = _injected(tmp_path, mirrored, [PROD, plain], "--image-registry", "registry.internal/mirror")
    public = _injected(tmp_path, mirrored, [PROD, plain])
    assert {c["image"] for c in from_mirror["spec"]["initContainers"]} == {
        "registry.internal/mirror/fluent/fluent-bit:3.2.10", "registry.internal/mirror/alpine/socat:1.8.0.3"}
    guard = guards(mirrored)["prod-everything"]
    assert guard.admits(create(from_mirror, PROD)) is True
    # What the server would never inject here: the catalogue's own images, or the mirror's image under another path.
    assert guard.admits(create(public, PROD)) is False
    assert guard.admits(create(_injected(tmp_path, mirrored, [PROD, plain], "--image-registry",
                                         "registry.internal"), PROD)) is False
    # The catalogue value's entry too: busybox:1.37 is Docker Hub's library/busybox.
    tailed = pod("prod", labels={"tail": "yes"})
    injected = _injected(tmp_path, mirrored, [PROD, tailed], "--image-registry", "registry.internal/mirror")
    assert any(c["image"] == "registry.internal/mirror/library/busybox:1.37"
               for c in injected["spec"].get("initContainers", []))
    assert guards(mirrored)["tailed"].admits(create(injected, PROD)) is True


def test_the_settings_reach_the_server_as_its_flags(tmp_path):
    docs = render([], "--set", "settings.image-registry=registry.internal:5000/mirror",
                  "--set", "settings.image-pull-secret={internal-registry,fluent-bit-mirror}")
    text = find(docs, "ConfigMap", f"{FULLNAME}-settings")["data"]["settings.yaml"]
    settings = yaml.safe_load(text)
    assert settings["image-registry"] == "registry.internal:5000/mirror"
    assert settings["image-pull-secret"] == ["internal-registry", "fluent-bit-mirror"]
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    from webhook.cli.commands import _parser
    from webhook.cli.settingsfile import flags

    parser = _parser()
    parsed = parser.parse_args(["serve", *flags(str(path), parser.serve_parser)])
    assert parsed.image_registry == "registry.internal:5000/mirror"
    assert parsed.image_pull_secret == ["internal-registry", "fluent-bit-mirror"]
    # The defaults hand the server nothing.
    path.write_text(find(render([]), "ConfigMap", f"{FULLNAME}-settings")["data"]["settings.yaml"])
    parsed = parser.parse_args(["serve", *flags(str(path), parser.serve_parser)])
    assert (parsed.image_registry, parsed.image_pull_secret) == (None, [])


@pytest.mark.parametrize("setting, problem", [
    ("settings.image-registry=https://registry.internal", "at '/settings/image-registry'"),
    ("settings.image-registry=Registry.Internal", "at '/settings/image-registry'"),
    ("settings.image-pull-secret={Bad_Secret}", "at '/settings/image-pull-secret'"),
])
def test_values_the_server_would_refuse_are_refused_at_render(setting, problem):
    done = helm("template", "pp", str(CHART), "-n", NAMESPACE, "--skip-tests", *_flags([setting]))
    assert done.returncode != 0 and problem in done.stderr, done.stderr
