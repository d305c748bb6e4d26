"""The request corpus: the recorded AdmissionReviews plus generated Pods of about 5 KB, 64 KB and 256 KB."""

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


def corpus(sizes: dict[str, int] = SIZES) -> dict[str, bytes]:
    """name -> AdmissionReview body; names like '64KB-all-three'."""
    bodies = {}
    for label, size in sizes.items():
        bodies[f"{label}-one"] = generated(size, ONE)
        bodies[f"{label}-all-three"] = generated(size, ALL_THREE)
    return bodies
