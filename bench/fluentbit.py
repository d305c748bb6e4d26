"""The log-shipper and json-log-adapter entries run for real, scenario by scenario (manual; needs root).

    python3 -m bench.fluentbit --fluent-bit PATH --conf-dir DIR [--quick] [--scenario NAME]... [--keep]
                               [--catalog DIR]   (entries that override the built-ins: to measure a change)

PATH is a Fluent Bit 3.2.10 binary (the image's /fluent-bit/bin/fluent-bit), DIR its standard config
files (the image's /fluent-bit/etc: parsers.conf...). Each scenario injects a Deployment's Pod with
`python3 -m webhook inject`, names it as the apiserver would (generateName at admission, the real name
after), and runs the injected container exactly as its spec says with tests/kubelet.py (its args, env
from the downward API, volumes, read-only root, uid 65532). The app is this program writing numbered
lines into the log volume, so every line lost or shipped twice is counted exactly. The central log
server is a second Fluent Bit (`-i forward ... -o file`) in its own network namespace, reached from the
Pod's over a veth pair in TEST-NET-1 (Pod 192.0.2.1/30, server 192.0.2.2/30); an outage stops it.

Scenarios (log-shipper): identity, outage, restart, long-line, rotation, memory, disk-bound;
(json-log-adapter): formats, multiline, stdout-only-json, adapter-restart. One line per scenario (per
format or language for formats and multiline): its name, PASS or FAIL, its figures. Exit status 1 if
any FAILed. Every scenario is bounded in time and removes its processes, namespaces and cgroup.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.kubelet import Image, PodSandbox

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "cr.fluentbit.io/fluent/fluent-bit:3.2.10"
NAMESPACE = "shop"
GENERATE_NAME = "web-7c9d8b6f5d-"
POD_NAME = GENERATE_NAME + "x2k8p"  # what the apiserver makes of the generateName, after admission
POD_ADDRESS, SERVER_ADDRESS, PORT = "192.0.2.1", "192.0.2.2", 24224  # TEST-NET-1, a /30 each side
ENDPOINT = f"{SERVER_ADDRESS}:{PORT}"
LOGS = "podpatterns-app-logs"
SHIPPER, ADAPTER = "log-shipper", "json-log-adapter"
SHIPPER_STATE, ADAPTER_STATE = "podpatterns-log-shipper-state", "podpatterns-json-log-adapter-state"
MI = 1024 * 1024


# -- the Pod --------------------------------------------------------------------------------------------

def injected_pod(entry: str, annotations: dict[str, str] | None = None, catalog: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Pod a Deployment's ReplicaSet gets, injected by `podpatterns inject`, named as the apiserver names it.

    The webhook sees the template (at CREATE a ReplicaSet's Pod has only a generateName); the name the
    containers learn from the downward API is the one the apiserver gives the Pod afterwards.
    """
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"},
                         "annotations": {"podpatterns.io/inject": entry, **(annotations or {})}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}}
    extra = [arg for directory in catalog for arg in ("--catalog", directory)]
    done = subprocess.run([sys.executable, "-m", "webhook", "inject", "-f", "-", *extra], input=yaml.safe_dump(manifest),
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"podpatterns inject failed: {done.stderr}")
    template = yaml.safe_load(done.stdout)["spec"]["template"]
    if POD_NAME in done.stdout:
        raise RuntimeError("the injected template names the Pod: the name cannot be known at admission")
    metadata = {**template["metadata"], "generateName": GENERATE_NAME, "name": POD_NAME, "namespace": NAMESPACE,
                "uid": str(uuid.uuid4())}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def container_of(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for key in ("initContainers", "containers"):
        for container in pod["spec"].get(key) or []:
            if container["name"] == name:
                return container
    raise KeyError(name)


def log_dir(pod: dict[str, Any], name: str) -> str:
    return next(m["mountPath"] for m in container_of(pod, name)["volumeMounts"] if m["name"] == LOGS)


class Container:
    """One container of the sandbox, (re)started as the kubelet does; its output goes to files, appended."""

    def __init__(self, sandbox: PodSandbox, name: str, work: Path, cgroup: MemoryCgroup | None = None):
        self.sandbox, self.name, self.cgroup = sandbox, name, cgroup
        self.stdout_path, self.stderr_path = work / f"{name}.stdout", work / f"{name}.stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, stdout: Path | None = None) -> subprocess.Popen[bytes]:
        self.starts += 1
        with open(stdout or self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            argv = self.sandbox.wrap(self.name, self.sandbox.argv(self.name))
            enter = self.cgroup.enter if self.cgroup else None
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, start_new_session=True, preexec_fn=enter)
        self.sandbox.processes.append(self.process)
        return self.process

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        return self.sandbox.stop(self.process, sig, timeout=30)  # the Pod's default grace period

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


# -- the log server -------------------------------------------------------------------------------------

class LogServer:
    """A Fluent Bit forward input writing what it receives to a file (`tag: [time, record]` per line), in
    a network namespace joined to the Pod's by a veth pair."""

    def __init__(self, fluent_bit: str, work: Path, pod_netns: str):
        self.fluent_bit, self.dir = fluent_bit, work / "server"
        self.dir.mkdir(parents=True)
        self.file = self.dir / "received.log"
        self.log = self.dir / "server.log"
        self.netns = f"pp-srv-{uuid.uuid4().hex[:8]}"
        suffix = uuid.uuid4().hex[:8]
        self.pod_link, self.server_link, self.pod_netns = f"ppp{suffix}", f"pps{suffix}", pod_netns
        self.process: subprocess.Popen[bytes] | None = None
        _run("ip", "netns", "add", self.netns)
        try:
            _run("ip", "-n", self.netns, "link", "set", "lo", "up")
            _run("ip", "link", "add", self.pod_link, "type", "veth", "peer", "name", self.server_link)
            _run("ip", "link", "set", self.pod_link, "netns", pod_netns)
            _run("ip", "link", "set", self.server_link, "netns", self.netns)
            _run("ip", "-n", pod_netns, "addr", "add", f"{POD_ADDRESS}/30", "dev", self.pod_link)
            _run("ip", "-n", self.netns, "addr", "add", f"{SERVER_ADDRESS}/30", "dev", self.server_link)
            _run("ip", "-n", pod_netns, "link", "set", self.pod_link, "up")
            _run("ip", "-n", self.netns, "link", "set", self.server_link, "up")
        except BaseException:
            subprocess.run(["ip", "link", "delete", self.pod_link], check=False, capture_output=True)
            self.close()
            raise

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, self.fluent_bit, "-i", "forward", "-p", f"listen={SERVER_ADDRESS}",
                 "-p", f"port={PORT}", "-o", "file", "-m", "*", "-p", f"path={self.dir}", "-p", f"file={self.file.name}",
                 "-f", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_until(self.listening, 15):
            raise RuntimeError(f"the log server does not listen: {self.log.read_text()[-2000:]}")

    def listening(self) -> bool:
        done = subprocess.run(["ip", "netns", "exec", self.netns, "ss", "-ltnH", f"sport = :{PORT}"],
                              capture_output=True, text=True, check=False)
        return bool(done.stdout.strip())

    def stop(self) -> None:
        """A graceful stop: it flushes what it has received to its file, then exits."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def close(self) -> None:
        self.stop()
        subprocess.run(["ip", "netns", "delete", self.netns], check=False)


class Received:
    """Reads the server's file as it grows: every record's tag and content, counted by line number."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0
        self.counts = bytearray()
        self.tags: dict[str, int] = {}
        self.records = 0
        self.foreign: list[str] = []
        self.check: Callable[[dict[str, Any]], str | None] | None = None
        self.bad: list[str] = []
        self.lengths: dict[int, int] = {}
        self.last_growth = time.monotonic()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        self.offset += end
        self.last_growth = time.monotonic()
        for raw in data[:end].splitlines():
            tag, _, rest = raw.decode("utf-8", "replace").partition(": ")
            _, record = json.loads(rest)
            self.records += 1
            self.tags[tag] = self.tags.get(tag, 0) + 1
            if self.check and (problem := self.check(record)) and len(self.bad) < 5:
                self.bad.append(problem)
            line = record.get("log", "")
            if not line[:9].isdigit():
                self.foreign.append(line[:200])
                continue
            seq = int(line[:9])
            if seq >= len(self.counts):
                self.counts.extend(bytes(seq + 1 - len(self.counts) + 65536))
            self.counts[seq] = min(255, self.counts[seq] + 1)
            if len(line) > 10_000:
                self.lengths[seq] = len(line)

    def got(self, seq: int) -> int:
        return self.counts[seq] if seq < len(self.counts) else 0

    def all_of(self, seqs: range | list[int]) -> bool:
        self.poll()
        return all(self.got(s) for s in seqs)

    def tally(self, written: int, skipped: tuple[int, ...] = ()) -> Tally:
        self.poll()
        expected = [s for s in range(written) if s not in skipped]
        missing = [s for s in expected if not self.got(s)]
        duplicated = sum(self.got(s) - 1 for s in expected if self.got(s) > 1)
        unexpected = sum(1 for s in range(len(self.counts)) if self.counts[s] and (s >= written or s in skipped))
        return Tally(len(expected), len(expected) - len(missing), duplicated, missing, unexpected)


@dataclass
class Tally:
    expected: int
    delivered: int
    duplicated: int
    missing: list[int]
    unexpected: int

    def ranges(self) -> str:
        return seq_ranges(self.missing)


def seq_ranges(seqs: list[int]) -> str:
    """1,2,3,7 -> '1-3,7' (at most 6 ranges shown)."""
    out: list[str] = []
    start = prev = None
    for seq in seqs + [None]:  # type: ignore[operator]
        if seq is not None and prev is not None and seq == prev + 1:
            prev = seq
            continue
        if start is not None:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = seq
    return ",".join(out[:6]) + (f",…(+{len(out) - 6} ranges)" if len(out) > 6 else "") if out else "none"


# -- the app --------------------------------------------------------------------------------------------

FILLER = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "


class App:
    """The app container: appends numbered lines (one sequence over all its files) to LOG_DIR/app.log,
    unbuffered (each batch one write), and rotates by rename (app.log -> app.log.1, replacing the
    previous one, then a new app.log), as logrotate's default `create` mode does."""

    def __init__(self, directory: Path, length: int = 120):
        self.dir, self.length = directory, length
        self.seq = 0
        self.rotations = 0
        self.lock = threading.Lock()
        self.handles: dict[str, Any] = {}
        self.closed = False

    def _handle(self, name: str) -> Any:
        if name not in self.handles:
            self.handles[name] = open(self.dir / name, "ab", buffering=0)
        return self.handles[name]

    def line(self, seq: int, length: int | None = None) -> bytes:
        length = length or self.length
        head = b"%09d " % seq
        body = (FILLER * (length // len(FILLER) + 1))[: max(0, length - len(head) - 1)]
        return head + body + b"\n"

    def write(self, count: int = 1, length: int | None = None, name: str = "app.log") -> range:
        with self.lock:
            first = self.seq
            if self.closed:  # a writer thread outliving a scenario that failed
                return range(first, first)
            self._handle(name).write(b"".join(self.line(s, length) for s in range(first, first + count)))
            self.seq += count
            return range(first, self.seq)

    def rotate(self, name: str = "app.log") -> None:
        with self.lock:
            if self.closed:
                return
            os.replace(self.dir / name, self.dir / f"{name}.1")
            self.handles.pop(name).close()
            self._handle(name)
            self.rotations += 1

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for handle in self.handles.values():
                handle.close()
            self.handles.clear()


class Writer(threading.Thread):
    """Writes `rate` lines a second from a thread until stopped; rotates every `rotate_every` seconds."""

    def __init__(self, app: App, rate: float, rotate_every: float | None = None):
        super().__init__(daemon=True)
        self.app, self.rate, self.rotate_every = app, rate, rotate_every
        self.halt = threading.Event()

    def run(self) -> None:
        start = last_rotation = time.monotonic()
        done = 0
        while not self.halt.is_set():
            now = time.monotonic()
            due = int((now - start) * self.rate) - done
            if due > 0:
                self.app.write(due)
                done += due
            if self.rotate_every and now - last_rotation >= self.rotate_every:
                self.app.rotate()
                last_rotation = now
            self.halt.wait(0.01)

    def stop(self) -> None:
        self.halt.set()
        self.join()


# -- memory cgroup --------------------------------------------------------------------------------------

class MemoryCgroup:
    """A child memory cgroup with the container's limit, as the kubelet makes one per container (v1 or v2)."""

    def __init__(self, limit: int):
        self.limit = limit
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = next((line.split(":", 2)[2] for line in lines if "memory" in line.split(":", 2)[1].split(",")), None)
        name = f"podpatterns-bench-{uuid.uuid4().hex[:8]}"
        if v1 is not None and Path("/sys/fs/cgroup/memory").is_dir():
            self.version = 1
            self.path = Path("/sys/fs/cgroup/memory") / v1.lstrip("/") / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
        else:
            self.version = 2
            ours = Path("/sys/fs/cgroup") / next(line.split(":", 2)[2] for line in lines if line.startswith("0::")).lstrip("/")
            # A cgroup v2 with processes cannot enable controllers for children: then the child goes next
            # to ours, under our parent, whose subtree has the memory controller (ours has it).
            parent = ours
            try:
                (ours / "cgroup.subtree_control").write_text("+memory")
            except OSError:
                parent = ours.parent
            self.path = parent / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(limit))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")

    def enter(self) -> None:
        """preexec_fn: the child process moves itself in before it execs the container."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def usage(self) -> int:
        return int(self._read("memory.usage_in_bytes" if self.version == 1 else "memory.current"))

    def stat(self) -> dict[str, int]:
        return {k: int(v) for k, v in (line.split() for line in self._read("memory.stat").splitlines())}

    def anon_and_file(self) -> tuple[int, int]:
        stat = self.stat()
        if self.version == 1:
            return stat.get("total_rss", stat.get("rss", 0)), stat.get("total_cache", stat.get("cache", 0))
        return stat.get("anon", 0), stat.get("file", 0)

    def figures(self) -> dict[str, Any]:
        if self.version == 1:
            oom = dict(line.split() for line in self._read("memory.oom_control").splitlines())
            return {"cgroup": "v1", "cgroup_peak_mib": mib(int(self._read("memory.max_usage_in_bytes"))),
                    "failcnt": int(self._read("memory.failcnt")), "oom_kill": int(oom.get("oom_kill", 0)),
                    "under_oom": int(oom.get("under_oom", 0))}
        events = dict(line.split() for line in self._read("memory.events").splitlines())
        peak = int(self._read("memory.peak")) if (self.path / "memory.peak").exists() else None
        return {"cgroup": "v2", "cgroup_peak_mib": mib(peak) if peak is not None else "n/a",
                "failcnt": int(events.get("max", 0)), "oom_kill": int(events.get("oom_kill", 0)),
                "under_oom": int(events.get("oom", 0))}

    def close(self) -> None:
        procs = self.path / "cgroup.procs"
        for _ in range(100):
            if not procs.exists() or not procs.read_text().split():
                break
            time.sleep(0.1)
        try:
            self.path.rmdir()
        except OSError as err:
            print(f"bench.fluentbit: cannot remove cgroup {self.path}: {err}", file=sys.stderr)


class Sampler(threading.Thread):
    """Samples a process's RSS (and a cgroup's usage) every 0.2 s; the process's own VmHWM at the end."""

    def __init__(self, cgroup: MemoryCgroup | None = None, directory: Path | None = None):
        super().__init__(daemon=True)
        self.cgroup, self.directory = cgroup, directory
        self.pids: list[int] = []
        self.rss = self.hwm = self.rss_anon = self.anon = self.file = self.disk = 0
        self.halt = threading.Event()

    def watch(self, pid: int) -> None:
        self.pids.append(pid)

    def run(self) -> None:
        while not self.halt.wait(0.2):
            self.sample()

    def sample(self) -> None:
        for pid in self.pids:
            status = _status(pid)
            self.rss = max(self.rss, status.get("VmRSS", 0))
            self.hwm = max(self.hwm, status.get("VmHWM", 0))
            self.rss_anon = max(self.rss_anon, status.get("RssAnon", 0))
        if self.cgroup:
            anon, cached = self.cgroup.anon_and_file()
            self.anon, self.file = max(self.anon, anon), max(self.file, cached)
        if self.directory:
            self.disk = max(self.disk, disk_usage(self.directory))

    def stop(self) -> None:
        self.sample()
        self.halt.set()
        self.join()


def _status(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


def disk_usage(directory: Path) -> int:
    """Bytes the files under `directory` occupy on disk (allocated blocks, as du counts)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def mib(n: float | None) -> float | str:
    return "n/a" if n is None else round(n / MI, 1)


# -- running a scenario ---------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        shown = []
        for key, value in self.figures.items():
            text = value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
            if isinstance(text, str) and (not text or re.search(r"[\s\"=]", text)):
                text = json.dumps(text, ensure_ascii=False)
            shown.append(f"{key}={text}")
        return f"{self.name:<24} {'PASS' if self.passed else 'FAIL'}  " + " ".join(shown)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Bench:
    def __init__(self, fluent_bit: str, conf_dir: str, quick: bool, work: Path, catalog: tuple[str, ...] = ()):
        self.fluent_bit, self.conf_dir, self.quick, self.work, self.catalog = fluent_bit, conf_dir, quick, work, catalog
        self.images = {IMAGE: Image(entrypoint=(), files={"/fluent-bit/bin/fluent-bit": fluent_bit,
                                                          "/fluent-bit/etc": conf_dir})}

    def scenario_dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class ShipperPod:
    """A Pod injected with log-shipper: its sandbox, the log server, the app, the shipper container."""

    def __init__(self, bench: Bench, work: Path, annotations: dict[str, str] | None = None,
                 cgroup: MemoryCgroup | None = None, app_length: int = 120):
        self.bench, self.work = bench, work
        self.pod = injected_pod(SHIPPER, {"log-shipper.podpatterns.io/endpoint": ENDPOINT, **(annotations or {})},
                                bench.catalog)
        (work / "pod.yaml").write_text(yaml.safe_dump(self.pod))
        self.sandbox = PodSandbox(self.pod, bench.images, workdir=work / "sandbox")
        self.server: LogServer | None = None
        self.app: App | None = None
        try:
            self.server = LogServer(bench.fluent_bit, work, self.sandbox.netns)
            self.received = Received(self.server.file)
            self.shipper = Container(self.sandbox, SHIPPER, work, cgroup)
            self.logs = self.sandbox.volumes[LOGS]
            self.state = self.sandbox.volumes[SHIPPER_STATE]
            self.app = App(self.logs, app_length)
        except BaseException:
            self.close()
            raise

    def log(self) -> str:
        return self.shipper.stderr_path.read_text(errors="replace") + self.shipper.stdout_path.read_text(errors="replace")

    def wait_started(self, timeout: float = 15) -> bool:
        marker = "[sp] stream processor started"
        count = self.shipper.starts
        return wait_until(lambda: self.log().count(marker) >= count or not self.shipper.alive(), timeout) \
            and self.shipper.alive()

    def close(self) -> None:
        if self.app:
            self.app.close()
        if self.server:
            self.server.close()
        self.sandbox.close()


def warnings(log: str, pattern: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if re.search(pattern, line)]


def pending_retries(log: str) -> int:
    """Chunks that failed to flush and have not been flushed since (by the shipper's own log)."""
    failed = set(re.findall(r"failed to flush chunk '([^']+)'", log))
    done = set(re.findall(r"flush (?:backlog )?chunk '([^']+)' succeeded", log))
    return len(failed - done)


def strip_time(line: str) -> str:
    return re.sub(r"^\[\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\] ", "", line)


# -- log-shipper scenarios ------------------------------------------------------------------------------

def identity(bench: Bench) -> list[Result]:
    work = bench.scenario_dir("identity")
    pod = ShipperPod(bench, work, {"log-shipper.podpatterns.io/logDir": "/var/log/web"})
    try:
        directory = log_dir(pod.pod, SHIPPER)
        expected_tag = f"podpatterns.{NAMESPACE}.{POD_NAME}"
        pod.server.start()
        pod.shipper.start()
        started = pod.wait_started()
        by_file: dict[int, str] = {}
        # Two files: each record must say which one it came from.
        for _ in range(5):
            for name in ("app.log", "audit.log"):
                by_file.update((seq, f"{directory}/{name}") for seq in pod.app.write(10, name=name))
            time.sleep(0.2)
        total = pod.app.seq

        def check(record: dict[str, Any]) -> str | None:
            seq = int(record.get("log", "x")[:9]) if record.get("log", "")[:9].isdigit() else None
            want = {"namespace": NAMESPACE, "pod": POD_NAME, "file": by_file.get(seq)}
            wrong = {k: record.get(k) for k, v in want.items() if record.get(k) != v}
            return f"line {seq}: {wrong}" if wrong else None

        pod.received.check = check
        wait_until(lambda: pod.received.all_of(range(total)), 30)
        tally = pod.received.tally(total)
        tags = dict(pod.received.tags)
        owners = sorted({path.stat().st_uid for path in pod.state.rglob("*")})  # it ran as runAsUser
        passed = started and tally.delivered == total and not tally.duplicated and not pod.received.bad \
            and set(tags) == {expected_tag} and owners == [65532]
        return [Result("identity", passed, {
            "pod": f"{NAMESPACE}/{POD_NAME} (generateName {GENERATE_NAME})", "written": total,
            "delivered": tally.delivered, "duplicated": tally.duplicated, "tags": ",".join(tags) or "none",
            "fields": "namespace,pod,file ok" if not pod.received.bad else "; ".join(pod.received.bad),
            "state_files_uid": ",".join(map(str, owners)),
            "example": _example(pod.server.file)})]
    finally:
        pod.close()


def _example(path: Path) -> str:
    try:
        with open(path) as handle:
            line = handle.readline().strip()
    except OSError:
        return "none"
    return re.sub(r'("log":"\d{9}) [^"]*"', r'\1 …"', line)


def outage(bench: Bench) -> list[Result]:
    work = bench.scenario_dir("outage")
    seconds = 20 if bench.quick else 60
    rate = 200
    pod = ShipperPod(bench, work)
    try:
        pod.server.start()
        pod.shipper.start()
        started = pod.wait_started()
        writer = Writer(pod.app, rate)
        writer.start()
        time.sleep(5)
        pod.server.stop()
        down_at = pod.app.seq
        time.sleep(seconds)
        pod.server.start()
        recovered = time.monotonic()
        backlog = pod.app.seq  # every line written before the endpoint came back
        backlog_after = all_after = retried_after = None
        writer_stopped = False
        deadline = recovered + (240 if bench.quick else 420)
        while time.monotonic() < deadline:
            elapsed = time.monotonic() - recovered
            if not writer_stopped and elapsed >= 5:
                writer.stop()
                writer_stopped = True
            pod.received.poll()
            if backlog_after is None and pod.received.all_of(range(backlog)):
                backlog_after = elapsed
            if retried_after is None and writer_stopped and pending_retries(pod.log()) == 0:
                retried_after = elapsed
            if writer_stopped and pod.received.all_of(range(pod.app.seq)):
                all_after = elapsed
                break
            # Every failed chunk has been flushed since, and nothing came for 10 s: no more is coming.
            if retried_after is not None and time.monotonic() - max(pod.received.last_growth,
                                                                    recovered + retried_after) > 10:
                break
            time.sleep(0.5)
        if not writer_stopped:
            writer.stop()
        time.sleep(3)  # anything shipped twice arrives now
        tally = pod.received.tally(pod.app.seq)
        log = pod.log()
        waits = [int(w) for w in re.findall(r"retry in (\d+) seconds", log)]
        passed = started and not tally.missing and not tally.duplicated and pod.shipper.alive()
        return [Result("outage", passed, {
            "outage_s": seconds, "rate_lines_s": rate, "written": pod.app.seq, "written_during_outage": backlog - down_at,
            "delivered": tally.delivered, "missing": len(tally.missing), "missing_lines": tally.ranges(),
            "duplicated": tally.duplicated,
            "backlog_delivered_after_recovery_s": round(backlog_after, 1) if backlog_after is not None else "never",
            "all_delivered_after_recovery_s": round(all_after, 1) if all_after is not None else "never",
            "retries_done_after_recovery_s": round(retried_after, 1) if retried_after is not None else "never",
            "last_record_after_recovery_s": round(pod.received.last_growth - recovered, 1),
            "retry_warnings": len(waits), "longest_retry_wait_s": max(waits, default=0)})]
    finally:
        pod.close()


def restart(bench: Bench) -> list[Result]:
    work = bench.scenario_dir("restart")
    pod = ShipperPod(bench, work)
    try:
        pod.server.start()
        pod.shipper.start()
        started = pod.wait_started()
        writer = Writer(pod.app, 100)
        writer.start()
        time.sleep(3)
        pod.shipper.stop(signal.SIGKILL)
        killed_at = pod.app.seq
        time.sleep(1.5)
        pod.app.rotate()  # app.log -> app.log.1 while the shipper is down
        rotated_at = pod.app.seq
        time.sleep(1.5)
        down_lines = pod.app.seq - killed_at
        pod.shipper.start()
        restarted = pod.wait_started()
        time.sleep(3)
        writer.stop()
        wait_until(lambda: pod.received.all_of(range(pod.app.seq)), 60, 0.5)
        time.sleep(3)
        tally = pod.received.tally(pod.app.seq)
        in_rotated = [s for s in tally.missing if s < rotated_at]
        passed = started and restarted and not tally.missing
        return [Result("restart", passed, {
            "written": pod.app.seq, "written_while_down": down_lines, "rotated_while_down": "app.log -> app.log.1",
            "delivered": tally.delivered, "missing": len(tally.missing), "missing_lines": tally.ranges(),
            "missing_from_rotated_file": len(in_rotated), "duplicated": tally.duplicated})]
    finally:
        pod.close()


def long_line(bench: Bench) -> list[Result]:
    work = bench.scenario_dir("long-line")
    pod = ShipperPod(bench, work)
    try:
        pod.server.start()
        pod.shipper.start()
        started = pod.wait_started()
        app = pod.app
        app.write(5)
        time.sleep(1)
        big = app.write(1, 100 * 1024)[0]
        huge = app.write(1, 2 * MI)[0]
        after = app.write(20)
        wait_until(lambda: pod.received.all_of([s for s in range(app.seq) if s != huge]), 30, 0.5)
        time.sleep(2)
        tally = pod.received.tally(app.seq, skipped=(huge,))
        log = pod.log()
        said = [strip_time(w) for w in warnings(log, r"long line|Skipping|buffer_max_size|exceed")]
        huge_got = pod.received.got(huge)
        passed = started and pod.received.got(big) == 1 and pod.received.lengths.get(big) == 100 * 1024 - 1 \
            and huge_got == 0 and all(pod.received.got(s) == 1 for s in after) and not tally.missing
        return [Result("long-line", passed, {
            "100KB_delivered": pod.received.got(big), "100KB_length": pod.received.lengths.get(big, 0),
            "2MB_delivered": huge_got, "following_20_delivered": sum(1 for s in after if pod.received.got(s)),
            "missing": len(tally.missing), "missing_lines": tally.ranges(), "duplicated": tally.duplicated,
            "shipper_said": " | ".join(said) or "nothing"})]
    finally:
        pod.close()


def rotation(bench: Bench) -> list[Result]:
    work = bench.scenario_dir("rotation")
    seconds, rate, every = (12, 500, 2.0) if bench.quick else (30, 500, 2.0)
    pod = ShipperPod(bench, work)
    try:
        pod.server.start()
        pod.shipper.start()
        started = pod.wait_started()
        writer = Writer(pod.app, rate, rotate_every=every)
        writer.start()
        time.sleep(seconds)
        writer.stop()
        wait_until(lambda: pod.received.all_of(range(pod.app.seq)), 60, 0.5)
        time.sleep(3)
        tally = pod.received.tally(pod.app.seq)
        passed = started and not tally.missing and not tally.duplicated
        return [Result("rotation", passed, {
            "seconds": seconds, "rate_lines_s": rate, "rotations": pod.app.rotations, "written": pod.app.seq,
            "delivered": tally.delivered, "missing": len(tally.missing), "missing_lines": tally.ranges(),
            "duplicated": tally.duplicated})]
    finally:
        pod.close()


def _write_volume(app: App, total_bytes: int, rate_bytes: float, rotate_bytes: int) -> None:
    """Writes `total_bytes` of lines at `rate_bytes`/s, rotating every `rotate_bytes` (the rotated file
    replaces the previous one: at most two files, as an app under a volume sizeLimit keeps)."""
    per_batch = 500
    batch_bytes = per_batch * app.length
    start = time.monotonic()
    written = in_file = 0
    while written < total_bytes:
        app.write(per_batch)
        written += batch_bytes
        in_file += batch_bytes
        if in_file >= rotate_bytes:
            app.rotate()
            in_file = 0
        ahead = written / rate_bytes - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)


def _settled(pod: ShipperPod, seconds: float, timeout: float) -> bool:
    """The shipper has read everything and written its chunks: the buffer stops growing for `seconds`."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = disk_usage(pod.state / "buffer")
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return True
        time.sleep(0.5)
    return False


def outstanding_chunks(pod: ShipperPod) -> int:
    """Chunks that failed to flush, have not been flushed since and are still on disk (not dropped)."""
    log = pod.log()
    failed = set(re.findall(r"failed to flush chunk '([^']+)'", log))
    done = set(re.findall(r"flush (?:backlog )?chunk '([^']+)' succeeded", log))
    on_disk = {path.name for path in (pod.state / "buffer").rglob("*.flb")}
    return len((failed - done) & on_disk)


def _deliver(pod: ShipperPod, written: int, timeout: float) -> tuple[bool, float]:
    """Starts the server; waits until every line arrived, or every chunk left on disk was flushed and
    nothing came for 10 s. Whether all arrived, and when the last record did (s after the start)."""
    pod.server.start()
    started = time.monotonic()
    pod.received.last_growth = started
    while time.monotonic() - started < timeout:
        pod.received.poll()
        if pod.received.all_of(range(written)):
            return True, pod.received.last_growth - started
        if time.monotonic() - pod.received.last_growth > 10 and outstanding_chunks(pod) == 0:
            break
        time.sleep(1)
    return False, pod.received.last_growth - started


def _which(tally: Tally, received: Received, written: int) -> str:
    """Whether the lines that never arrived are the oldest ones (all before the first that did)."""
    if not tally.missing:
        return "none"
    first_kept = next((s for s in range(written) if received.got(s)), None)
    return "oldest" if first_kept is not None and max(tally.missing) < first_kept else "not only the oldest"


def memory(bench: Bench) -> list[Result]:
    work = bench.scenario_dir("memory")
    total = (100 if bench.quick else 300) * MI
    cgroup = MemoryCgroup(128 * MI)
    pod = None
    try:
        pod = ShipperPod(bench, work, cgroup=cgroup, app_length=200)
        sampler = Sampler(cgroup, pod.state)
        process = pod.shipper.start()
        started = pod.wait_started()
        sampler.watch(process.pid)
        sampler.start()
        begun = time.monotonic()
        _write_volume(pod.app, total, 10 * MI, 32 * MI)  # 10 MiB/s, 50,000 lines/s
        write_s = time.monotonic() - begun
        _settled(pod, 10, 300)
        on_disk = disk_usage(pod.state / "buffer")
        complete, delivered_after = _deliver(pod, pod.app.seq, 300 if bench.quick else 600)
        time.sleep(3)
        alive = pod.shipper.alive()
        sampler.stop()
        status = _status(process.pid)
        tally = pod.received.tally(pod.app.seq)
        figures = cgroup.figures()
        oom = figures["oom_kill"] > 0 or (process.poll() == -signal.SIGKILL)
        passed = started and alive and not oom and tally.delivered > 0 and not tally.duplicated
        return [Result("memory", passed, {
            "limit_mib": 128, "written_mib": round(total / MI), "write_s": round(write_s, 1), "written": pod.app.seq,
            "rotations": pod.app.rotations, "buffer_on_disk_mib": mib(on_disk), "delivered": tally.delivered,
            "delivered_pct": round(100 * tally.delivered / max(1, pod.app.seq), 1),
            "dropped_lines": tally.ranges(), "dropped_are": _which(tally, pod.received, pod.app.seq),
            "duplicated": tally.duplicated, "buffer_peak_on_disk_mib": mib(sampler.disk),
            "last_record_after_recovery_s": round(delivered_after, 1), "all_delivered": complete,
            "peak_rss_mib": mib(max(sampler.rss, status.get("VmHWM", 0), sampler.hwm)),
            "peak_rss_anon_mib": mib(sampler.rss_anon),
            "cgroup_peak_anon_mib": mib(sampler.anon), "cgroup_peak_file_mib": mib(sampler.file), **figures,
            "shipper_alive": alive})]
    finally:
        if pod:
            pod.close()
        cgroup.close()


def disk_bound(bench: Bench) -> list[Result]:
    work = bench.scenario_dir("disk-bound")
    total = 64 * MI
    pod = ShipperPod(bench, work, {"log-shipper.podpatterns.io/bufferMB": "16"}, app_length=200)
    try:
        sampler = Sampler(None, pod.state / "buffer")
        pod.shipper.start()
        started = pod.wait_started()
        sampler.start()
        _write_volume(pod.app, total, 8 * MI, 10**12)
        _settled(pod, 10, 180)
        on_disk = disk_usage(pod.state / "buffer")
        complete, delivered_after = _deliver(pod, pod.app.seq, 180)
        time.sleep(3)
        sampler.stop()
        tally = pod.received.tally(pod.app.seq)
        which = _which(tally, pod.received, pod.app.seq)
        log = pod.log()
        said = [strip_time(w) for w in warnings(log, r"(?i)drop|remov|overlimit|limit|discard|full")
                if "queue memory limit" not in w]
        bound = 16 * MI * 1.25 + 2 * MI
        passed = started and sampler.disk <= bound and tally.delivered > 0 and not tally.duplicated \
            and which in ("oldest", "none")
        return [Result("disk-bound", passed, {
            "bufferMB": 16, "written_mib": round(total / MI), "written": pod.app.seq,
            "buffer_peak_on_disk_mib": mib(sampler.disk), "buffer_before_recovery_mib": mib(on_disk),
            "delivered": tally.delivered, "dropped": len(tally.missing), "dropped_lines": tally.ranges(),
            "dropped_are": which,
            "duplicated": tally.duplicated,
            "last_record_after_recovery_s": round(delivered_after, 1), "all_delivered": complete,
            "shipper_said": " | ".join(said[:3]) or "nothing (at the default log level info)"})]
    finally:
        pod.close()


# -- json-log-adapter -----------------------------------------------------------------------------------

class AdapterPod:
    def __init__(self, bench: Bench, work: Path, annotations: dict[str, str] | None = None):
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.pod = injected_pod(ADAPTER, annotations, bench.catalog)
        (work / "pod.yaml").write_text(yaml.safe_dump(self.pod))
        self.sandbox = PodSandbox(self.pod, bench.images, workdir=work / "sandbox")
        self.adapter = Container(self.sandbox, ADAPTER, work)
        self.logs = self.sandbox.volumes[LOGS]
        self.state = self.sandbox.volumes[ADAPTER_STATE]
        self.diagnostics = self.state / "fluent-bit.log"

    def started(self, timeout: float = 15) -> bool:
        count = self.adapter.starts
        marker = "[sp] stream processor started"
        return wait_until(lambda: (self.diagnostics.exists() and self.diagnostics.read_text(errors="replace").count(marker)
                                   >= count) or not self.adapter.alive(), timeout) and self.adapter.alive()

    def diagnostics_text(self) -> str:
        return self.diagnostics.read_text(errors="replace") if self.diagnostics.exists() else ""

    def stdout_lines(self, path: Path | None = None) -> list[str]:
        path = path or self.adapter.stdout_path
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def close(self) -> None:
        self.sandbox.close()


def strict_json(line: str) -> dict[str, Any] | str:
    """The JSON object on a line, or why it is not one (duplicate keys included)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate keys {dupes}")
        return dict(items)
    try:
        value = json.loads(line, object_pairs_hook=pairs)
    except ValueError as err:
        return f"not one JSON object ({err}): {line[:160]}"
    return value if isinstance(value, dict) else f"not an object: {line[:160]}"


# Typical lines of each format, the fields the parser must give and the time each line says (UTC ISO);
# then one line that is not of that format.
FORMATS: dict[str, dict[str, Any]] = {
    "plain": {"lines": ["2024-05-01 12:00:00 INFO server started on :8080", "user alice logged in"],
              "fields": ["log"], "time": None},
    "json": {"lines": ['{"level":"info","msg":"server started","port":8080}',
                       '{"level":"error","msg":"db down","time":"01/May/2024:12:00:01 +0000"}',
                       '{"level":"warn","msg":"slow","time":"2024-05-01T12:00:02Z"}'],
             "fields": ["level", "msg"], "time": [None, "2024-05-01T12:00:01", None],
             # What most JSON loggers write (zap, slog, logrus, pino...): an RFC 3339 time.
             "batch": ['{"time":"2024-05-01T12:00:02.123Z","level":"info","msg":"request served","status":200}']},
    "nginx": {"lines": ['203.0.113.7 - - [01/May/2024:12:00:00 +0000] "GET /index.html HTTP/1.1" 200 612 "-" "curl/8.5.0"',
                        ('203.0.113.8 - bob [01/May/2024:12:00:01 +0000] "POST /api/v1/orders HTTP/2.0" 201 48 '
                         '"https://shop.example/" "Mozilla/5.0 (X11; Linux x86_64)"')],
              "fields": ["remote", "host", "user", "method", "path", "code", "size", "referer", "agent"],
              "time": ["2024-05-01T12:00:00", "2024-05-01T12:00:01"]},
    "apache": {"lines": ['203.0.113.7 - frank [01/May/2024:12:00:00 +0000] "GET /apache_pb.gif HTTP/1.0" 200 2326',
                         ('203.0.113.8 - - [01/May/2024:12:00:01 +0000] "GET /a HTTP/1.1" 404 196 '
                          '"http://example.com/start" "Mozilla/4.08 [en] (Win98; I ;Nav)"')],
               "fields": ["host", "user", "method", "path", "code", "size"],
               "time": ["2024-05-01T12:00:00", "2024-05-01T12:00:01"]},
    "logfmt": {"lines": ['level=info msg="server started" port=8080 ts=2024-05-01T12:00:00Z',
                         'level=error msg="db down" err="dial tcp 10.0.0.5:5432: connect: connection refused"'],
               "fields": ["level", "msg"], "time": None},
    "syslog": {"lines": ['<165>1 2024-05-01T12:00:00.003Z web-1 checkout 4242 ID47 [exampleSDID@32473 iut="3"] order placed',
                         '<14>1 2024-05-01T12:00:01.000Z web-1 checkout - - - cache warmed'],
               "fields": ["pri", "host", "ident", "pid", "msgid", "extradata", "message"],
               "time": ["2024-05-01T12:00:00.003", "2024-05-01T12:00:01"]},
    "syslog-rfc3164": {"lines": ["<34>May  1 12:00:00 web-1 su[230]: 'su root' failed for alice on /dev/pts/8",
                                 "<13>May  1 12:00:01 web-1 checkout: order placed"],
                       "fields": ["pri", "host", "ident", "message"],
                       "time": ["-05-01T12:00:00", "-05-01T12:00:01"]},
}
BAD_LINE = "!!! this line is not in that format: 42% [done] {"


def formats(bench: Bench) -> list[Result]:
    results = []
    for name, spec in FORMATS.items():
        results.append(_format(bench, name, spec))
    return results


ADAPTER_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")  # json_date_format=iso8601
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$")
BATCH = 2000  # lines of the format written after the first check, to measure what the adapter logs per line


def _format(bench: Bench, name: str, spec: dict[str, Any]) -> Result:
    time_key = "time"  # the default timeKey
    pod = AdapterPod(bench, bench.scenario_dir("formats") / name, {"json-log-adapter.podpatterns.io/format": name})
    try:
        lines = [*spec["lines"], BAD_LINE]
        with open(pod.logs / "app.log", "a") as handle:
            handle.write("".join(line + "\n" for line in lines))
        pod.adapter.start()
        started = pod.started()
        wait_until(lambda: len(pod.stdout_lines()) >= len(lines), 15)
        time.sleep(1.5)
        # Then many typical lines: does the adapter's own log (on the 64Mi state volume) grow with them?
        diagnostics_before = len(pod.diagnostics_text().encode())
        with open(pod.logs / "app.log", "a") as handle:
            batch = spec.get("batch", spec["lines"])
            handle.write("".join(batch[i % len(batch)] + "\n" for i in range(BATCH)))
        wait_until(lambda: len(pod.stdout_lines()) >= len(lines) + BATCH, 20)
        time.sleep(1.5)
        per_line = (len(pod.diagnostics_text().encode()) - diagnostics_before) / BATCH
        pod.adapter.stop()
        out = pod.stdout_lines()
        problems, odd = [], []
        records = [strict_json(line) for line in out]
        problems += sorted({r for r in records if isinstance(r, str)})[:3]
        if len(out) != len(lines) + BATCH:
            problems.append(f"{len(out)} lines out for {len(lines) + BATCH} in")
        good = [r for r in records if isinstance(r, dict)]
        for index, line in enumerate(spec["lines"]):
            if index >= len(good):
                break
            record = good[index]
            missing = [f for f in spec["fields"] if f not in record]
            if missing:
                problems.append(f"line {index + 1}: fields {missing} missing, got {sorted(record)}")
            stamp = record.get(time_key)
            own = json.loads(line).get(time_key) if name == "json" else None
            want = (spec["time"] or [None] * len(spec["lines"]))[index]
            if own is not None and stamp == own:
                odd.append(f"line {index + 1}: the line's own {time_key} field {own!r} came out unparsed, in place "
                           f"of the adapter's timestamp")
            elif stamp is None:
                problems.append(f"line {index + 1}: no {time_key}")
            elif not ISO_TIME.match(str(stamp)):
                problems.append(f"line {index + 1}: {time_key}={stamp!r} is the line's own text, not a timestamp "
                                f"(the parser keeps its time field, which replaces the adapter's)")
            elif want and want not in str(stamp):
                problems.append(f"line {index + 1}: {time_key}={stamp!r}, the line says {want}")
            elif not ADAPTER_TIME.match(str(stamp)):
                odd.append(f"line {index + 1}: {time_key}={stamp!r} is the line's own time text, which replaced "
                           f"the adapter's timestamp")
        if len(good) >= len(lines):
            bad = good[len(lines) - 1]
            if set(bad) != {time_key, "log"} or bad.get("log") != BAD_LINE:
                problems.append(f"the bad line came out as {json.dumps(bad)[:200]}")
        example = out[1] if len(out) > 1 else (out[0] if out else "")
        passed = started and not problems
        said = [strip_time(w) for w in warnings(pod.diagnostics_text(), r"\[ ?(warn|error)\]")
                if "shutdown in max" not in w]
        figures: dict[str, Any] = {"lines_in": len(lines) + BATCH, "json_out": len(good), "example": example[:300],
                                   "adapter_log_bytes_per_line": round(per_line, 1)}
        if per_line > 1:
            figures["state_volume_64Mi_full_after_lines"] = int(64 * MI / per_line)
        if said:
            figures["adapter_said"] = " | ".join(dict.fromkeys(said[:4]))[:400]
        if problems:
            figures["problems"] = "; ".join(problems)[:700]
        if odd:
            figures["odd"] = "; ".join(odd)[:600]
        return Result(f"formats[{name}]", passed, figures)
    finally:
        pod.close()


TRACES = {
    "java": ["Exception in thread \"main\" java.lang.IllegalStateException: order 42 has no items",
             "\tat com.example.shop.Order.total(Order.java:57)",
             "\tat com.example.shop.Checkout.run(Checkout.java:23)",
             "\tat com.example.shop.Main.main(Main.java:11)",
             "Caused by: java.lang.NullPointerException: items is null",
             "\tat com.example.shop.Order.items(Order.java:31)",
             "\t... 3 more"],
    "python": ["Traceback (most recent call last):",
               "  File \"/app/shop/main.py\", line 11, in <module>",
               "    main()",
               "  File \"/app/shop/main.py\", line 7, in main",
               "    total = order.total()",
               "  File \"/app/shop/order.py\", line 57, in total",
               "    return sum(i.price for i in self.items)",
               "TypeError: 'NoneType' object is not iterable"],
    "go": ["panic: runtime error: index out of range [5] with length 3",
           "",
           "goroutine 1 [running]:",
           "main.total(...)",
           "\t/app/shop/order.go:57",
           "main.main()",
           "\t/app/shop/main.go:11 +0x1d"],
}


def multiline(bench: Bench) -> list[Result]:
    results = []
    for language, trace in TRACES.items():
        pod = AdapterPod(bench, bench.scenario_dir("multiline") / language,
                         {"json-log-adapter.podpatterns.io/multiline": language})
        try:
            before = f"2024-05-01 12:00:00 INFO checkout started ({language})"
            after = "2024-05-01 12:00:02 INFO checkout retried"
            pod.adapter.start()
            started = pod.started()
            with open(pod.logs / "app.log", "a") as handle:
                handle.write("\n".join([before, *trace, after]) + "\n")
            wait_until(lambda pod=pod: len(pod.stdout_lines()) >= 3, 20)
            time.sleep(6)  # the multiline flush timeout passes: the last record comes out too
            pod.adapter.stop()
            records = [strict_json(line) for line in pod.stdout_lines()]
            logs = [r.get("log") if isinstance(r, dict) else r for r in records]
            texts = [log.removesuffix("\n") if isinstance(log, str) else log for log in logs]
            joined = "\n".join(trace)
            one = joined in texts
            passed = started and texts == [before, joined, after]
            figures: dict[str, Any] = {"trace_lines": len(trace), "records_out": len(records), "trace_in_one_record": one}
            if any(isinstance(log, str) and log.endswith("\n") for log in logs):
                figures["odd"] = "every record's log keeps the line's trailing newline"
            if not passed:
                figures["records"] = json.dumps([str(x)[:80] for x in logs])[:600]
            results.append(Result(f"multiline[{language}]", passed, figures))
        finally:
            pod.close()
    return results


def stdout_only_json(bench: Bench) -> list[Result]:
    pod = AdapterPod(bench, bench.scenario_dir("stdout-only-json"))
    try:
        pod.adapter.start()
        started = pod.started()
        app = App(pod.logs)
        app.write(20)
        wait_until(lambda: len(pod.stdout_lines()) >= 20, 15)
        time.sleep(1.5)
        stderr_running = pod.adapter.stderr_path.read_text(errors="replace")
        pod.adapter.stop()
        app.close()
        out = pod.stdout_lines()
        not_json = [line for line in out if not isinstance(strict_json(line), dict)]
        stderr = pod.adapter.stderr_path.read_text(errors="replace")
        diagnostics = pod.diagnostics.read_text(errors="replace") if pod.diagnostics.exists() else ""
        passed = started and len(out) == 20 and not not_json and "[ info]" in diagnostics
        return [Result("stdout-only-json", passed, {
            "stdout_lines": len(out), "stdout_not_json": len(not_json),
            "stderr_while_running_bytes": len(stderr_running.encode()),
            "stderr_lines": len(stderr.splitlines()), "stderr_bytes": len(stderr.encode()),
            "stderr": stderr.replace("\n", "⏎")[:1200],
            "diagnostics_file": f"{ADAPTER_STATE}:/fluent-bit.log ({len(diagnostics.splitlines())} lines)",
            "diagnostics_first": strip_time(diagnostics.splitlines()[0]) if diagnostics else "none"})]
    finally:
        pod.close()


def adapter_restart(bench: Bench) -> list[Result]:
    results = []
    for how, sig in (("sigterm", signal.SIGTERM), ("sigkill", signal.SIGKILL)):
        work = bench.scenario_dir("adapter-restart") / how
        pod = AdapterPod(bench, work)
        try:
            app = App(pod.logs)
            outputs = [work / "run-1.stdout", work / "run-2.stdout"]  # each container run has its own log
            pod.adapter.start(outputs[0])
            started = pod.started()
            writer = Writer(app, 200)
            writer.start()
            time.sleep(3)
            pod.adapter.stop(sig)
            stopped_at = app.seq
            time.sleep(2)
            pod.adapter.start(outputs[1])
            restarted = pod.started()
            time.sleep(3)
            writer.stop()
            app.close()

            def seen(pod: AdapterPod = pod, outputs: list[Path] = outputs) -> dict[int, int]:
                counts: dict[int, int] = {}
                for path in outputs:
                    for line in pod.stdout_lines(path):
                        record = strict_json(line)
                        if isinstance(record, dict) and str(record.get("log", ""))[:9].isdigit():
                            seq = int(record["log"][:9])
                            counts[seq] = counts.get(seq, 0) + 1
                return counts
            wait_until(lambda app=app, seen=seen: len(seen()) >= app.seq, 15, 0.5)
            time.sleep(1.5)
            pod.adapter.stop()
            counts = seen()
            missing = [s for s in range(app.seq) if s not in counts]
            duplicated = sum(c - 1 for c in counts.values() if c > 1)
            passed = started and restarted and not missing and not duplicated
            results.append(Result(f"adapter-restart[{how}]", passed, {
                "written": app.seq, "printed": len(counts), "missing": len(missing), "missing_lines": seq_ranges(missing),
                "duplicated": duplicated, "stopped_after_line": stopped_at}))
        finally:
            pod.close()
    return results


SCENARIOS: dict[str, Callable[[Bench], list[Result]]] = {
    "identity": identity, "outage": outage, "restart": restart, "long-line": long_line, "rotation": rotation,
    "memory": memory, "disk-bound": disk_bound, "formats": formats, "multiline": multiline,
    "stdout-only-json": stdout_only_json, "adapter-restart": adapter_restart,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.fluentbit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fluent-bit", required=True, metavar="PATH", help="the Fluent Bit 3.2.10 binary")
    parser.add_argument("--conf-dir", required=True, metavar="DIR", help="its standard config files (parsers.conf...)")
    parser.add_argument("--quick", action="store_true", help="shorter: a 20 s outage, 100 MB in the memory scenario")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                        help=f"run only these (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, received records)")
    parser.add_argument("--catalog", action="append", default=[], metavar="DIR",
                        help="PatternTemplate files that override the built-in entries (to measure a changed entry)")
    args = parser.parse_args(argv)
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, mounts, cgroups)")
    for tool in ("ip", "unshare", "setpriv", "mount", "ss"):
        if shutil.which(tool) is None:
            problems.append(f"needs {tool}")
    if not os.access(args.fluent_bit, os.X_OK):
        problems.append(f"{args.fluent_bit} is not an executable")
    if not (Path(args.conf_dir) / "parsers.conf").is_file():
        problems.append(f"{args.conf_dir} has no parsers.conf")
    if problems:
        print("bench.fluentbit: " + "; ".join(problems), file=sys.stderr)
        return 2
    # On disk, as a node's emptyDir is: a tmpfs would charge the buffer files to the shipper's memory.
    work = Path(tempfile.mkdtemp(prefix="podpatterns-fluentbit-", dir="/var/tmp"))
    bench = Bench(os.path.abspath(args.fluent_bit), os.path.abspath(args.conf_dir), args.quick, work,
                  tuple(os.path.abspath(d) for d in args.catalog))
    failed = False
    try:
        for name in args.scenario or list(SCENARIOS):
            begun = time.monotonic()
            try:
                results = SCENARIOS[name](bench)
            except Exception as err:  # noqa: BLE001 - a broken scenario is a FAIL line, the others still run
                results = [Result(name, False, {"error": f"{type(err).__name__}: {err}"[:600]})]
            for result in results:
                result.figures["scenario_s"] = round(time.monotonic() - begun)
                print(result.line(), flush=True)
                failed = failed or not result.passed
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
