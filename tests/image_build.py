"""Builds the container image with buildah, from a local Debian base made with debootstrap, and runs
a command of it the way a cluster would: read-only root filesystem, a writable /tmp, a numeric uid.

There is no Docker daemon and no registry here, so the base image is made locally: a minimal bookworm
with python3, python3-venv, python3-pip and ca-certificates, committed into a buildah store of our own
under a name that says what it holds, and reused by later runs. Only the standard library is used:
`python3 tests/image_build.py enter ...` is also what runs inside the mount namespace (see `enter`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
# A store of our own: vfs works inside containers and VMs alike (no overlay mounts), and a store of
# its own cannot clash with a differently configured default store on the same machine.
STORE = Path(os.environ.get("PODPATTERNS_BUILDAH_ROOT", "/var/lib/containers/podpatterns"))
RUNROOT = Path(os.environ.get("PODPATTERNS_BUILDAH_RUNROOT", "/run/podpatterns-buildah"))
BUILDAH = ["buildah", "--storage-driver", "vfs", "--root", str(STORE), "--runroot", str(RUNROOT)]

SUITE = "bookworm"
MIRROR = os.environ.get("PODPATTERNS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
# The tag names what the base holds; change it with the recipe so a cached base is never stale.
BASE_IMAGE = f"localhost/podpatterns-test-base:{SUITE}-minbase-python3-venv-pip-ca-r1"
IMAGE = "localhost/podpatterns:test"
CONTAINER_PREFIX = "podpatterns-test-"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

REQUIRED_TOOLS = ("buildah", "debootstrap", "unshare", "mount")
INSTALL_HINT = "install them with `apt-get install -y buildah debootstrap` (.ci/run does so when they are missing)"


def missing_prerequisites() -> list[str]:
    """What keeps the image from being built and run here, in words; empty when nothing does."""
    problems = [f"`{tool}` is not on PATH" for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if problems:
        problems.append(INSTALL_HINT)
    if os.geteuid() != 0:
        problems.append("building with --isolation chroot and running the image's filesystem need root")
    return problems


def buildah(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*BUILDAH, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type", "image", name, check=False, timeout=60).returncode == 0


@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """One builder of the base at a time, should two test runs share the machine."""
    STORE.mkdir(parents=True, exist_ok=True)
    with open(STORE / ".podpatterns-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base() -> tuple[str, float]:
    """The local base image, made with debootstrap when the store does not hold it yet.

    Returns its name and the seconds spent making it (0 when it was reused)."""
    with _store_lock():
        if image_exists(BASE_IMAGE):
            return BASE_IMAGE, 0.0
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="podpatterns-base-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), MIRROR],
                capture_output=True, text=True, timeout=1200,
            )
            if result.returncode != 0:
                raise RuntimeError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
            # What apt fetched is not part of the base: the downloaded packages and the package lists.
            for leftover in (rootfs / "var/cache/apt/archives").glob("*.deb"):
                leftover.unlink()
            shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
            (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
            container = buildah("from", "--name", f"{CONTAINER_PREFIX}base-{os.getpid()}", "scratch").stdout.strip()
            try:
                mountpoint = buildah("mount", container).stdout.strip()
                # tar keeps owners, modes, links and device nodes exactly as debootstrap made them.
                pack = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE)
                unpack = subprocess.run(["tar", "-C", mountpoint, "--numeric-owner", "-xpf", "-"], stdin=pack.stdout,
                                        capture_output=True, timeout=600)
                pack.stdout.close()
                if pack.wait(timeout=60) != 0 or unpack.returncode != 0:
                    raise RuntimeError(f"copying the debootstrap tree into the image failed: {unpack.stderr[-2000:]!r}")
                buildah("umount", container)
                buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "--env", "LANG=C.UTF-8", "--cmd", '["python3"]', container)
                buildah("commit", "--rm", container, BASE_IMAGE, timeout=600)
            except BaseException:
                buildah("rm", container, check=False)
                raise
        return BASE_IMAGE, time.monotonic() - started


def build_volumes() -> list[str]:
    """Bind mounts for the build's RUN steps so its pip trusts what the host trusts.

    Behind a TLS-inspecting proxy the host's CA bundle holds a CA the base image does not know; pip
    (which otherwise uses its own certifi bundle) is pointed at the host's bundle through a pip.conf
    mounted for the build only. Nothing of this reaches the image."""
    if not HOST_CA_BUNDLE.is_file():
        return []
    conf = STORE / "podpatterns-build-pip.conf"
    conf.write_text(f"[global]\ncert = {HOST_CA_BUNDLE}\n")
    return ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro", "--volume", f"{conf}:/etc/pip.conf:ro"]


def build_image(base: str, log_file: Path, tag: str = IMAGE, context: Path = ROOT, timeout: float = 1200) -> tuple[str, float]:
    """`buildah build` of the Dockerfile on `base`, its whole output kept in `log_file`: the image id
    and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(
        [*BUILDAH, "build", "--isolation", "chroot", "--pull=never", "--build-arg", f"BASE_IMAGE={base}",
         *build_volumes(), "--file", str(context / "Dockerfile"), "--tag", tag, str(context)],
        capture_output=True, text=True, timeout=timeout,
    )
    seconds = time.monotonic() - started
    log = result.stdout + result.stderr
    log_file.write_text(log)
    if result.returncode != 0:
        raise RuntimeError(f"buildah build failed ({result.returncode}) after {seconds:.0f} s (whole log: {log_file}):\n{log[-8000:]}")
    # The image this tag named before is now dangling: drop it (and any other) from our store.
    buildah("rmi", "--prune", check=False, timeout=300)
    return inspect(tag)["FromImageID"], seconds


def inspect(image: str) -> dict[str, Any]:
    return json.loads(buildah("inspect", "--type", "image", image, timeout=60).stdout)


def image_config(image: str) -> dict[str, Any]:
    """The OCI config of the image: User, Entrypoint, Cmd, Env, WorkingDir…"""
    return inspect(image)["OCIv1"]["config"]


def image_size(image: str) -> str:
    """The image's size as `buildah images` tells it (uncompressed layers, e.g. "250 MB")."""
    rows = json.loads(buildah("images", "--json", image, timeout=60).stdout)
    return str(rows[0]["size"])


def remove_leftover_containers() -> None:
    """Working containers a crashed earlier run left in our store."""
    listing = buildah("containers", "--json", check=False, timeout=60)
    for row in (json.loads(listing.stdout or "null") or []) if listing.returncode == 0 else []:
        if row.get("containername", "").startswith(CONTAINER_PREFIX):
            buildah("rm", row["containername"], check=False)


@contextlib.contextmanager
def mounted(image: str) -> Iterator[Path]:
    """A working container of `image` with its root filesystem mounted; removed afterwards."""
    name = f"{CONTAINER_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    buildah("from", "--pull=never", "--name", name, image, timeout=600)
    try:
        yield Path(buildah("mount", name).stdout.strip())
    finally:
        buildah("umount", name, check=False)
        buildah("rm", name, check=False)


def run_command(rootfs: Path, config: dict[str, Any], argv: list[str], tmp: Path) -> list[str]:
    """The command that runs `argv` in `rootfs` as the image's user, with `tmp` as its /tmp.

    `unshare --mount` gives a private mount namespace (nothing is mounted on the host); in it `enter`
    mounts the root filesystem read-only, execs `argv` and so keeps the process id: the caller's
    Popen.pid is the image's process. The network namespace is the host's, as with
    `buildah run --isolation chroot`, so its ports are reached on 127.0.0.1."""
    user = config.get("User") or "0:0"
    uid, _, gid = user.partition(":")
    if not (uid.isdigit() and (gid or uid).isdigit()):
        raise ValueError(f"the image's user {user!r} is not numeric: it cannot be run without a passwd lookup")
    spec = {
        "rootfs": str(rootfs), "tmp": str(tmp), "uid": int(uid), "gid": int(gid or uid),
        "workdir": config.get("WorkingDir") or "/",
        "env": dict(item.partition("=")[::2] for item in config.get("Env") or []),
        "argv": argv,
    }
    return ["unshare", "--mount", "--propagation", "private", sys.executable, str(Path(__file__).resolve()),
            "enter", json.dumps(spec)]


def enter(spec: dict[str, Any]) -> None:
    """Runs in the private mount namespace, as root: prepare the root filesystem, become the image's
    user, exec the command. Any failure before the exec exits with 97 and says why."""
    root = Path(spec["rootfs"])

    def mount(*args: str) -> None:
        subprocess.run(["mount", *args], check=True)

    # Read-only root, as readOnlyRootFilesystem: bind it onto itself, then remount that bind read-only.
    mount("--bind", str(root), str(root))
    mount("-o", "remount,bind,ro", str(root))
    # The writable /tmp (an emptyDir in the chart), /proc, and the few devices a Python server opens.
    mount("--bind", spec["tmp"], str(root / "tmp"))
    mount("-t", "proc", "proc", str(root / "proc"))
    mount("-t", "tmpfs", "-o", "mode=0755,nosuid", "tmpfs", str(root / "dev"))
    for device in ("null", "zero", "random", "urandom"):
        (root / "dev" / device).touch()
        mount("--bind", f"/dev/{device}", str(root / "dev" / device))
    # Make sure the read-only mount holds even for root before anything of the image runs.
    try:
        (root / ".podpatterns-write-probe").touch()
    except OSError:
        pass
    else:
        (root / ".podpatterns-write-probe").unlink()
        sys.exit("enter: the root filesystem is writable after the read-only remount")
    os.chroot(root)
    os.chdir(spec["workdir"])
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])  # from uid 0 to another: every capability is dropped here
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def stop(process: subprocess.Popen[Any], grace: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "enter":
        sys.exit("usage: image_build.py enter SPEC-JSON (run by run_command under unshare --mount)")
    try:
        enter(json.loads(sys.argv[2]))
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"enter: {err}", file=sys.stderr)
        sys.exit(97)
