"""The container image: the Dockerfile checked by hadolint and trivy, then built with buildah and run.

`test_dockerfile_*` read the Dockerfile only (fast). The `image` tests build it with
`buildah build --isolation chroot` on a local Debian base made with debootstrap (tests/image_build.py)
and run the image's own ENTRYPOINT in its filesystem the way a cluster runs it: read-only root
filesystem, a writable /tmp, uid 65532. They fail, never skip, when buildah or debootstrap is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests import image_build
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
UID = 65532
ENTRYPOINT = ["podpatterns", "serve", "--host", "0.0.0.0", "--port", "8443", "--certs-dir", "/tmp/podpatterns/certs"]
COMPILERS = ("gcc", "g++", "cc", "c++", "clang", "make", "ld", "as")


# --- the Dockerfile, read -------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(parsed: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, each list starting with its FROM."""
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in parsed:
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def test_dockerfile_shape():
    """What the issue asks of the Dockerfile, read off its instructions."""
    parsed = instructions(DOCKERFILE.read_text())
    keyword, rest = parsed[0]
    assert keyword == "ARG" and rest.startswith("BASE_IMAGE="), "the base is chosen by a BASE_IMAGE build argument"
    default = rest.partition("=")[2]
    slim = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", default)
    assert slim and int(slim.group(1)) >= 11, f"default BASE_IMAGE {default!r} is not an official slim Python 3.11+"

    build, final = stages(parsed)[0], stages(parsed)[-1]
    assert len(stages(parsed)) >= 2, "multi-stage"
    for stage in stages(parsed):
        assert stage[0][1].split()[0] == "${BASE_IMAGE}", f"{stage[0]} does not start from ${{BASE_IMAGE}}"
    assert re.fullmatch(r"\$\{BASE_IMAGE\} AS build", build[0][1], re.I)

    # Dependencies are exactly the hashed lock, from published wheels only; the project's own wheel is
    # built in the first stage and installed with no index and no dependency of its own.
    build_runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert re.search(r"pip install [^&]*--only-binary=:all: [^&]*--require-hashes -r requirements/runtime.txt", build_runs)
    assert re.search(r"pip install [^&]*--no-index [^&]*--no-deps /wheels/podpatterns-", build_runs)

    # The final stage: the venv copied in, nothing built or installed, a numeric non-root user.
    assert [k for k, _ in final].count("RUN") == 0, "the final stage runs nothing: no package manager, no compiler"
    final_text = "\n".join(f"{k} {rest}" for k, rest in final)
    for word in ("gcc", "build-essential", "python3-dev", "apt-get", "clang"):
        assert word not in final_text, f"{word} in the final stage"
    assert ("COPY", "--from=build /opt/podpatterns /opt/podpatterns") in final
    users = [rest for k, rest in final if k == "USER"]
    assert users == [f"{UID}:{UID}"], f"the final stage must run as {UID}:{UID}, found USER {users}"
    env = " ".join(rest for k, rest in final if k == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env, "a read-only root needs no bytecode or home writes"
    entrypoints = [json.loads(rest) for k, rest in final if k == "ENTRYPOINT"]
    assert entrypoints == [ENTRYPOINT], "ENTRYPOINT in exec form: podpatterns serve with the in-cluster flags only"
    assert not [k for k, _ in final if k == "CMD"], "a CMD would be appended to the chart's args"


def test_dockerignore_keeps_the_context_small():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for needed in (".git", "certs", "bench", "tests", ".cache", "**/__pycache__", "*.egg-info", ".venv"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"
    for kept in ("pyproject.toml", "README.md", "requirements", "webhook"):
        assert not any(p.lstrip("/").split("/")[0] in (kept, "*") for p in patterns), f".dockerignore drops {kept}"


@pytest.mark.slow
def test_hadolint_is_clean(tmp_path):
    """hadolint at its default failure threshold: not even a style note. A bad Dockerfile proves it checks."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")  # our own config: no user or repository file can silence a rule

    def lint(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["hadolint", "--no-color", "--config", str(config), str(path)],
                              capture_output=True, text=True, timeout=120)

    bad = tmp_path / "Dockerfile.bad"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    control = lint(bad)
    assert control.returncode != 0 and "DL3007" in control.stdout, f"hadolint did not flag a `latest` base:\n{control.stdout}"

    result = lint(DOCKERFILE)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def trivy_config(directory: Path, cache: Path) -> dict:
    """`trivy config` with its embedded checks: --skip-check-update keeps it from fetching the check
    bundle (there is no internet here); it then logs 'Falling back to embedded checks' and uses the
    checks compiled into the binary. Run in `directory` so no trivy.yaml or .trivyignore of ours applies."""
    result = subprocess.run(
        ["trivy", "config", "--skip-check-update", "--skip-version-check", "--disable-telemetry",
         "--cache-dir", str(cache), "--misconfig-scanners", "dockerfile", "--format", "json", "."],
        cwd=directory, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def misconfigurations(report: dict) -> tuple[list[dict], int]:
    """(findings, number of checks that passed) over the report's Dockerfile results."""
    findings, passed = [], 0
    for target in report.get("Results") or []:
        if target.get("Type") == "dockerfile":
            findings += target.get("Misconfigurations") or []
            passed += (target.get("MisconfSummary") or {}).get("Successes", 0)
    return findings, passed


@pytest.mark.slow
def test_trivy_config_finds_nothing_high(tmp_path):
    """No HIGH or CRITICAL misconfiguration; a Dockerfile running as root from `latest` proves the checks ran."""
    cache = tmp_path / "cache"
    control_dir = tmp_path / "control"
    control_dir.mkdir()
    (control_dir / "Dockerfile").write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\nCMD [\"bash\"]\n")
    control, _ = misconfigurations(trivy_config(control_dir, cache))
    control_high = {f["ID"] for f in control if f["Severity"] in ("HIGH", "CRITICAL")}
    assert "DS-0002" in control_high, f"trivy did not flag a root user as HIGH; its findings: {control}"

    ours_dir = tmp_path / "ours"
    ours_dir.mkdir()
    shutil.copy(DOCKERFILE, ours_dir / "Dockerfile")
    findings, passed = misconfigurations(trivy_config(ours_dir, cache))
    assert passed >= 20, f"trivy evaluated only {passed} Dockerfile checks"
    serious = [f"{f['ID']} ({f['Severity']}): {f['Title']}" for f in findings if f["Severity"] in ("HIGH", "CRITICAL")]
    assert serious == [], serious
    # LOW DS-0026 (no HEALTHCHECK) is accepted: Kubernetes ignores HEALTHCHECK, the chart probes /healthz.
    others = {f["ID"] for f in findings} - {"DS-0026"}
    assert others == set(), f"trivy findings besides the accepted DS-0026: {findings}"


# --- the image, built and run ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The image built from this work tree; removed from the store afterwards (the base is kept)."""
    problems = image_build.missing_prerequisites()
    if problems:
        pytest.fail("cannot build the container image here: " + "; ".join(problems))
    image_build.remove_leftover_containers()
    base, base_seconds = image_build.ensure_base()
    image_id, build_seconds = image_build.build_image(base, tmp_path_factory.mktemp("image") / "build.log")
    print(f"\nimage {image_build.IMAGE} ({image_id[:12]}), {image_build.image_size(image_build.IMAGE)}: "
          f"base {'reused' if not base_seconds else f'made in {base_seconds:.0f} s'}, built in {build_seconds:.0f} s")
    yield image_build.IMAGE
    image_build.remove_leftover_containers()
    image_build.buildah("rmi", image_build.IMAGE, check=False)


@pytest.fixture(scope="module")
def config(built):
    return image_build.image_config(built)


@pytest.fixture(scope="module")
def rootfs(built):
    with image_build.mounted(built) as path:
        yield path


def run_once(rootfs: Path, config: dict, argv: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(image_build.run_command(rootfs, config, argv, tmp), capture_output=True, text=True, timeout=timeout)


def writable_tmp(path: Path) -> Path:
    """A host directory that becomes the container's /tmp, writable by anyone like an emptyDir."""
    path.mkdir()
    path.chmod(0o1777)
    return path


@pytest.mark.image
def test_image_config(config):
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ENTRYPOINT
    assert not config.get("Cmd"), "no CMD: the chart's args follow the ENTRYPOINT directly"
    env = dict(item.partition("=")[::2] for item in config["Env"])
    assert env["HOME"] == "/tmp" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/podpatterns/bin:")
    assert "8443/tcp" in config.get("ExposedPorts", {})


@pytest.mark.image
def test_image_filesystem(rootfs):
    """No compiler, no pip, nothing owned by the runtime uid, and only the schemas the server reads."""
    for folder in ("usr/bin", "usr/local/bin", "bin", "opt/podpatterns/bin"):
        present = [tool for tool in COMPILERS if (rootfs / folder / tool).exists()]
        assert present == [], f"compilers in /{folder}: {present}"
    assert not list((rootfs / "usr/lib").glob("gcc/*/*/cc1")), "the C compiler proper is installed"
    venv_bin = rootfs / "opt/podpatterns/bin"
    assert (venv_bin / "podpatterns").is_file()
    assert not list(venv_bin.glob("pip*")), "pip is left in the image's virtualenv"

    owned = []
    for folder, dirs, files in os.walk(rootfs):
        for name in dirs + files:
            path = Path(folder, name)
            if path.lstat().st_uid == UID:
                owned.append(str(path.relative_to(rootfs)))
    assert owned == [], f"files owned by the runtime uid {UID} (it must need no writable file in the image): {owned[:20]}"

    site = next(rootfs.glob("opt/podpatterns/lib/python3.*/site-packages"))
    schemas = sorted(p.name for p in (site / "kubernetes_validate" / "kubernetes-json-schema").iterdir())
    assert len(schemas) == 2 and schemas[1] == schemas[0] + "-strict", schemas
    assert not (site / "kubernetes" / "aio").exists()
    # Bytecode was compiled at install time, since the read-only root will not take any at run time.
    assert list((site / "webhook" / "server" / "__pycache__").glob("serve.*.pyc"))


@pytest.mark.image
def test_entrypoint_serves_healthz_as_nonroot_on_a_readonly_root(rootfs, config, tmp_path):
    """The image's own ENTRYPOINT (only the port changed, to avoid a clash), with a read-only root, a
    writable /tmp and uid 65532: it makes development certificates in /tmp and answers /healthz over
    TLS, verified against the CA it wrote."""
    tmp = writable_tmp(tmp_path / "tmp")
    port = free_port()
    argv = [*config["Entrypoint"], *(config.get("Cmd") or []), "--port", str(port)]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(image_build.run_command(rootfs, config, argv, tmp), stdout=out, stderr=subprocess.STDOUT)
    try:
        ca = tmp / "podpatterns" / "certs" / "ca.crt"
        response, deadline = None, time.monotonic() + 60
        while response is None and time.monotonic() < deadline:
            assert process.poll() is None, f"the entrypoint exited {process.returncode}:\n{log.read_text()[-4000:]}"
            if ca.exists():
                try:
                    response = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=ssl.create_default_context(cafile=str(ca)), timeout=5)
                except (httpx.TransportError, ssl.SSLError):
                    pass
            if response is None:
                time.sleep(0.2)
        assert response is not None, f"no TLS answer on port {port} within 60 s:\n{log.read_text()[-4000:]}"
        assert response.status_code == 200, response.text
        assert httpx.get(f"https://127.0.0.1:{port}/readyz", verify=ssl.create_default_context(cafile=str(ca)), timeout=5).status_code == 200

        status = image_build.proc_status(process.pid)
        assert status["Uid"].split() == [str(UID)] * 4, status["Uid"]
        assert status["Gid"].split() == [str(UID)] * 4, status["Gid"]
        assert status["Groups"] == "", "no supplementary group (root's 0 would be one)"
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert [b"podpatterns", b"serve"] == [Path(cmdline[1].decode()).name.encode(), cmdline[2]], cmdline

        # All it wrote is below /tmp (the root was read-only), owned by its uid.
        written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        assert written == ["podpatterns", "podpatterns/certs", "podpatterns/certs/ca.crt", "podpatterns/certs/ca.key",
                           "podpatterns/certs/tls.crt", "podpatterns/certs/tls.key"], written
        assert {p.stat().st_uid for p in tmp.rglob("*")} == {UID}
        assert (tmp / "podpatterns/certs/tls.key").stat().st_mode & 0o077 == 0, "the private key is readable by others"
    finally:
        image_build.stop(process)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean stop too.
    output = log.read_text()
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, (
        f"the server did not stop cleanly on SIGTERM ({process.returncode}):\n{output[-4000:]}")


@pytest.mark.image
def test_catalog_validate_in_image(rootfs, config, tmp_path):
    """The trimmed schemas still validate: a good entry passes, a misspelt container field is named."""
    tmp = writable_tmp(tmp_path / "tmp")
    program = config["Entrypoint"][0]
    good, bad = tmp / "good", tmp / "bad"
    good.mkdir()
    bad.mkdir()
    entry = yaml.safe_load((ROOT / "webhook" / "catalog" / "builtin" / "log-shipper.yaml").read_text())
    entry["metadata"]["name"] = "my-shipper"
    (good / "my-shipper.yaml").write_text(yaml.safe_dump(entry))
    entry["spec"]["containers"][0]["imagePullPolciy"] = "Always"
    (bad / "typo.yaml").write_text(yaml.safe_dump(entry))

    listed = run_once(rootfs, config, [program, "catalog", "list"], tmp)
    assert listed.returncode == 0, listed.stderr
    assert {"log-shipper", "json-log-adapter", "db-ambassador"} <= {line.split()[0] for line in listed.stdout.splitlines() if line[:1].isalpha()}

    ok = run_once(rootfs, config, [program, "catalog", "validate", "/tmp/good"], tmp)
    assert ok.returncode == 0, ok.stderr
    assert "ok: my-shipper" in ok.stdout

    broken = run_once(rootfs, config, [program, "catalog", "validate", "/tmp/bad"], tmp)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "imagePullPolciy" in broken.stderr and "typo.yaml" in broken.stderr
