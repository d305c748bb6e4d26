"""The request corpus: the recorded AdmissionReviews plus generated Pods of about 5 KB, 64 KB and 256 KB.

Two ways a Pod gets big, measured apart (README, "Performance"): by **data** (env values, long commands,
annotations, volumes: the engine reads little of it) and by **app containers** (each gets every entry's env
and mounts, so the patch grows with them).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "admission-reviews"
SIZES = {"5KB": 5 * 1024, "64KB": 64 * 1024, "256KB": 256 * 1024}
ONE = {"podpatterns.io/inject": "log-shipper"}
ALL_THREE = {"podpatterns.io/inject": "log-shipper, json-log-adapter, db-ambassador",
             "db-ambassador.podpatterns.io/upstream": "pg.prod.svc:5432"}


def recorded() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))}


def generated(size: int, annotations: dict[str, str]) -> bytes:
    """An AdmissionReview for a Pod grown to about `size` bytes: more containers, env vars and volumes."""
    review = json.loads((FIXTURES / "pod-create-annotated.json").read_text())
    pod = review["request"]["object"]
    pod["metadata"]["annotations"] = dict(annotations)
    spec = pod["spec"]
    base = spec["containers"][0]
    i = 0
    while len(json.dumps(review)) < size:
        volume = f"config-{i}"
        spec["volumes"].append({"name": volume, "configMap": {"name": f"app-config-{i}", "defaultMode": 420}})
        container = copy.deepcopy(base)
        container["name"] = f"worker-{i}"
        container["ports"] = [{"containerPort": 9000 + i, "protocol": "TCP"}]
        container["env"] = [{"name": f"SETTING_{i}_{j}", "value": f"value-{i}-{j}-" + "x" * 24} for j in range(12)]
        container["volumeMounts"] = container["volumeMounts"] + [{"name": volume, "mountPath": f"/etc/config-{i}"}]
        spec["containers"].append(container)
        i += 1
    return json.dumps(review).encode()


SCRIPT = "set -eu; " + "; ".join(f"echo step {i} && test -d /srv/data/{i} || mkdir -p /srv/data/{i}" for i in range(20))


def grown_by_data(size: int, annotations: dict[str, str]) -> bytes:
    """The 5 KB Pod (same app containers) grown to about `size` bytes by data: an env var with a long value,
    a long command argument, an annotation and a Secret volume with items, in turn, round the containers."""
    review = json.loads(generated(SIZES["5KB"], annotations))
    pod = review["request"]["object"]
    spec, containers = pod["spec"], pod["spec"]["containers"]
    i = 0
    while len(json.dumps(review)) < size:
        container = containers[i % len(containers)]
        container.setdefault("env", []).append({"name": f"CONFIG_JSON_{i}", "value": json.dumps(
            {"feature": f"f{i}", "endpoints": [f"https://svc-{j}.example.internal:8443/v1" for j in range(4)]})})
        container.setdefault("args", []).append(SCRIPT)
        pod["metadata"]["annotations"][f"config.example.com/revision-{i}"] = json.dumps(
            {"revision": i, "checksum": f"{i:064x}", "author": "platform-team@example.com"})
        spec["volumes"].append({"name": f"secret-{i}", "secret": {"secretName": f"tls-{i}", "defaultMode": 288, "items": [
            {"key": key, "path": key} for key in ("tls.crt", "tls.key", "ca.crt")]}})
        i += 1
    return json.dumps(review).encode()


def corpus(sizes: dict[str, int] = SIZES) -> dict[str, bytes]:
    """name -> AdmissionReview body: '5KB-one' and '5KB-all-three', then for each bigger size '64KB-data' and
    '64KB-containers' (all three entries)."""
    bodies = {}
    for label, size in sizes.items():
        if size == SIZES["5KB"]:
            bodies[f"{label}-one"] = generated(size, ONE)
            bodies[f"{label}-all-three"] = generated(size, ALL_THREE)
        else:
            bodies[f"{label}-data"] = grown_by_data(size, ALL_THREE)
            bodies[f"{label}-containers"] = generated(size, ALL_THREE)
    return bodies
