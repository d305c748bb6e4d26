"""Shared test helpers: the recorded AdmissionReviews, patch application and schema validation."""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import jsonschema
import kubernetes_validate
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "admission-reviews"
GOLDEN = Path(__file__).resolve().parent / "golden"
SCHEMA_VERSIONS = ("1.30", "1.36")


def review(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def all_reviews() -> list[str]:
    names = sorted(p.stem for p in FIXTURES.glob("*.json"))
    assert names, f"no recorded AdmissionReviews in {FIXTURES}"
    return names


def review_with(pod_annotations: dict[str, str] | None = None, **spec_changes: Any) -> dict[str, Any]:
    """The recorded `pod-create-annotated` review with other annotations and spec fields."""
    body = review("pod-create-annotated")
    pod = body["request"]["object"]
    if pod_annotations is not None:
        pod["metadata"]["annotations"] = pod_annotations
    pod["spec"].update(spec_changes)
    return body


def ops_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response.get("patchType") == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def apply(pod: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Applies the ops with jsonpatch, independent of the engine's own code."""
    return jsonpatch.JsonPatch(copy.deepcopy(ops)).apply(copy.deepcopy(pod))


@functools.cache
def pod_schema(version: str) -> jsonschema.Validator:
    """The strict Pod schema that kubernetes_validate uses for `version`, built once: kubernetes_validate
    builds its schema registry anew on every call, ten times slower than validating itself."""
    release = [v for v in kubernetes_validate.utils.all_versions()
               if kubernetes_validate.utils.major_minor(v) <= version][-1]
    folder = f"kubernetes-json-schema/v{release}-local-strict"
    schema = kubernetes_validate.utils.schema_contents(f"{folder}/pod-v1.json", version)
    definitions = kubernetes_validate.utils.schema_contents(f"{folder}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def assert_valid_pod(pod: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", **pod}
    # Pod-level resources (spec.resources) came in Kubernetes 1.34: older schemas do not know the field.
    for version in SCHEMA_VERSIONS if "resources" not in pod.get("spec", {}) else SCHEMA_VERSIONS[-1:]:
        pod_schema(version).validate(pod)
    names = [c["name"] for key in ("containers", "initContainers", "ephemeralContainers") for c in pod["spec"].get(key, [])]
    assert len(names) == len(set(names)), f"duplicate container names {names}"
    volumes = [v["name"] for v in pod["spec"].get("volumes", [])]
    assert len(volumes) == len(set(volumes)), f"duplicate volume names {volumes}"
    for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']} mounts missing volume {mount['name']}"
        paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert len(paths) == len(set(paths)), f"{container['name']} has duplicate mount paths"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def podpatterns_command() -> list[str]:
    found = shutil.which("podpatterns")
    return [found] if found else [sys.executable, "-m", "webhook"]


class Server:
    """`podpatterns serve` in a subprocess, as a user starts it."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None):
        """`env`, when given, replaces the environment the server inherits."""
        self.workdir = workdir
        self.port = free_port()
        self.base = f"https://127.0.0.1:{self.port}"
        self.log_path = workdir / f"serve-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [*podpatterns_command(), "serve", "--port", str(self.port), *args],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
        )
        self.ca = workdir / "certs" / "ca.crt"
        self._wait()
        self.client = httpx.Client(base_url=self.base, verify=ssl.create_default_context(cafile=self.ca), timeout=10)

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not listen within 30 s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text()

    def mutate(self, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post("/mutate", content=content, headers={"content-type": "application/json"})

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
