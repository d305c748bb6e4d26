"""A stand-in kubelet: runs a container of a Pod the webhook injected, exactly as its spec says.

What the kubelet does and the test needs, with the real Linux pieces (as root):
- the Pod's **network namespace** (`ip netns`), loopback up and nothing else: containers of the Pod talk
  over 127.0.0.1 and nothing outside reaches it;
- each container in its own **mount namespace** (`unshare`): the Pod's volumes bind-mounted at the
  container's `volumeMounts` (`readOnly`, `subPath`), the root filesystem read-only when
  `readOnlyRootFilesystem` says so, and the image's files (a program from Debian, or one built by hand)
  bind-mounted where the image has them;
- **env** as the kubelet builds it: `value` with `$(VAR)` expansion from the variables before it,
  `valueFrom.fieldRef` (downward API) and `resourceFieldRef`; `command`/`args` expanded the same way;
  the image's entrypoint when the container gives no `command`;
- the **user**: `runAsUser`/`runAsGroup` with no supplementary groups, no new privileges and no
  capabilities when the container drops ALL (`setpriv`);
- **exec probes** run in the same namespaces and as the same user, with the probe's timeout.

It does not pull images: `Image` says which local program stands in for an image reference.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class Image:
    """A local stand-in for a container image: its entrypoint, and host paths that appear inside it."""

    entrypoint: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)  # path in the image -> path on this machine


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is `$`, anything else stays."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return VAR.sub(one, text)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """A downward API `fieldRef.fieldPath` of the Pod."""
    meta = pod.get("metadata", {})
    found = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if found:
        return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": pod.get("spec", {}).get("nodeName", "node-1"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1",
    }
    if path not in simple:
        raise ValueError(f"the stand-in kubelet does not know fieldPath {path}")
    return str(simple[path])


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
        elif "fieldRef" in (var.get("valueFrom") or {}):
            env[var["name"]] = field_value(pod, var["valueFrom"]["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in (var.get("valueFrom") or {}):
            ref = var["valueFrom"]["resourceFieldRef"]
            kind, _, resource = ref["resource"].partition(".")
            env[var["name"]] = str((container.get("resources") or {}).get(kind, {}).get(resource, ""))
        else:
            raise ValueError(f"the stand-in kubelet cannot resolve env {var}")
    return env


def find(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    for key in ("initContainers", "containers"):
        for container in pod["spec"].get(key) or []:
            if container["name"] == name:
                return container
    raise KeyError(f"no container {name} in the Pod")


class PodSandbox:
    """One Pod: its network namespace and volumes; containers and probes run inside them."""

    def __init__(self, pod: Mapping[str, Any], images: Mapping[str, Image], workdir: Path | None = None):
        self.pod = pod
        self.images = images
        self.netns = f"pp-{uuid.uuid4().hex[:10]}"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="podsandbox-"))
        self.volumes: dict[str, Path] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._made: list[Path] = []
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        try:  # a Pod it cannot run leaves no namespace nor directory behind
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
            for volume in pod["spec"].get("volumes") or []:
                path = self.workdir / "volumes" / volume["name"]
                path.mkdir(parents=True)
                if "emptyDir" in volume:
                    path.chmod(0o777)  # as the kubelet makes an emptyDir: any uid of the Pod can write
                elif "downwardAPI" in volume:
                    for item in volume["downwardAPI"]["items"]:
                        (path / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                        (path / item["path"]).write_text(field_value(pod, item["fieldRef"]["fieldPath"]))
                else:
                    raise ValueError(f"the stand-in kubelet has no volume type for {volume}")
                self.volumes[volume["name"]] = path
        except BaseException:
            self.close()
            raise

    # -- what runs inside -----------------------------------------------------------------------------

    def argv(self, name: str) -> list[str]:
        """The container's process as the kubelet starts it: command or entrypoint, then args, expanded."""
        container = find(self.pod, name)
        env = container_env(self.pod, container)
        command = container.get("command") or list(self.images[container["image"]].entrypoint)
        return [expand(str(part), env) for part in [*command, *(container.get("args") or [])]]

    def wrap(self, name: str, argv: list[str]) -> list[str]:
        """`argv` inside the container `name`: its network, mounts, env, user and capabilities."""
        container = find(self.pod, name)
        security = container.get("securityContext") or {}
        image = self.images[container["image"]]
        script = ["set -e"]
        targets: list[tuple[str, str, bool]] = [(src, dst, True) for dst, src in image.files.items()]
        for mount in container.get("volumeMounts") or []:
            source = self.volumes[mount["name"]] / mount.get("subPath", "")
            source.mkdir(parents=True, exist_ok=True)
            targets.append((str(source), mount["mountPath"], bool(mount.get("readOnly"))))
        for source, target, read_only in targets:
            self._mount_point(Path(target), Path(source).is_dir())
            script.append(f"mount --bind {shlex.quote(source)} {shlex.quote(target)}")
            if read_only:
                script.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        if security.get("readOnlyRootFilesystem"):
            script.append("mount -o remount,bind,ro /")
        user = [f"--reuid={security.get('runAsUser', 0)}", f"--regid={security.get('runAsGroup', 0)}",
                "--clear-groups"]
        if security.get("allowPrivilegeEscalation") is False:
            user.append("--no-new-privs")
        if "ALL" in ((security.get("capabilities") or {}).get("drop") or []):
            user += ["--inh-caps=-all", "--bounding-set=-all"]
        script.append('cd /; exec setpriv ' + " ".join(user) + ' -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"')
        env = [f"{k}={v}" for k, v in container_env(self.pod, container).items()]
        return ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", "\n".join(script), "sh", *env, *argv]

    def start(self, name: str, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
        """Starts the container `name`'s process; the sandbox stops it on close()."""
        process = subprocess.Popen(self.wrap(name, self.argv(name)), stdout=stdout, stderr=stderr,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def probe(self, name: str, kind: str = "startupProbe") -> bool:
        """One attempt of the container's exec probe, as the kubelet makes it: exit 0 within timeoutSeconds."""
        probe = find(self.pod, name)[kind]
        try:
            done = subprocess.run(self.wrap(name, list(probe["exec"]["command"])), capture_output=True,
                                  timeout=probe.get("timeoutSeconds", 1))
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def app(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """A program of the app's, in the Pod's network namespace (e.g. psql to 127.0.0.1)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, **kwargs)

    def app_popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], start_new_session=True, **kwargs)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Stops a process as the kubelet stops a container: the signal, then SIGKILL after `timeout`.

        To its whole process group, even when the main process has already exited (crashed, OOM-killed): the
        processes it forked (e.g. socat's connection handlers) are the container's too, and go with it."""
        with contextlib.suppress(ProcessLookupError):  # no process of the group is left
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return process.returncode

    def close(self) -> None:
        for process in self.processes:
            self.stop(process, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", self.netns], check=False)
        for made in reversed(self._made):
            with_parents = made
            if with_parents.is_dir():
                shutil.rmtree(with_parents, ignore_errors=True)
            else:
                with_parents.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "PodSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mount_point(self, target: Path, directory: bool) -> None:
        """A bind mount needs its target to exist: made on this machine (and removed on close) if absent."""
        if target.exists():
            return
        first_missing = target
        while not first_missing.parent.exists():
            first_missing = first_missing.parent
        if directory:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        self._made.append(first_missing)
