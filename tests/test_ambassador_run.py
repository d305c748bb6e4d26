"""db-ambassador, run for real: the injected socat proxy in a Pod's network namespace, a PostgreSQL behind it.

The Pod comes from `podpatterns inject` and runs in the stand-in kubelet (tests/kubelet.py). The database
host is a second network namespace joined to the Pod's by a veth pair (TEST-NET-1: the Pod side 192.0.2.1/30,
the database 192.0.2.2/30) with a real PostgreSQL on 192.0.2.2:5432 behind md5 password auth. Nothing is
mocked: the app is psql (or a socket speaking the PostgreSQL protocol), the proxy is socat as the container's
args say, the memory limit is a real memory cgroup. Runs as root (CI does).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubelet import Image, PodSandbox, container_env, find
from webhook.catalog.catalogue import builtin_entries
from webhook.cli.commands import main as podpatterns

POD_ADDRESS, DB_ADDRESS = "192.0.2.1", "192.0.2.2"  # TEST-NET-1 (RFC 5737): never routed anywhere
DB_PORT_UPSTREAM = 5432
DB_USER = DB_NAME = "shop"
DB_PASSWORD = "s3cret-shop"
UPSTREAM_KEY = "db-ambassador.podpatterns.io/upstream"
IMAGES = {"alpine/socat:1.8.0.3": Image(entrypoint=("socat",)), "postgres:15": Image()}
ORDERS = [(1, "19.90"), (2, "5.10"), (3, "75.00")]  # sum 100.00


# -- the database host ------------------------------------------------------------------------------------


class Database:
    """PostgreSQL in its own network namespace, listening on 192.0.2.2:5432; the Pod is plugged in by a veth."""

    def __init__(self) -> None:
        # Debian's PostgreSQL server (15 on bookworm; tests/run installs it): the newest one here.
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
        assert found, "no PostgreSQL server in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        self.bin = found[-1].parent
        self.netns = f"ppdb-{uuid.uuid4().hex[:8]}"
        # Under /tmp itself, not pytest's 0700 tmp dirs: the postgres user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="pp-ambassador-pg-"))
        self.data = self.dir / "data"
        self.sockets = self.dir / "sockets"  # the unix socket, for the superuser: no netns, no proxy, no password
        self.log = self.dir / "postgres.log"
        self.started = False

    def as_postgres(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """A program as the unprivileged `postgres` user, in the database's network namespace."""
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.dir), "LC_ALL": "C"}
        return subprocess.run(["ip", "netns", "exec", self.netns, "setpriv", "--reuid=postgres", "--regid=postgres",
                               "--init-groups", "--", *argv], capture_output=True, text=True, env=env, check=False,
                              **kwargs)

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        # The database host listens on 192.0.2.2 before any Pod is plugged in (each test's Pod brings its own
        # veth, and so its own copy of 192.0.2.2): allow binding an address not configured yet, in this netns only.
        subprocess.run(["ip", "netns", "exec", self.netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind"],
                       check=True)
        self.sockets.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.sockets, "postgres", "postgres")
        done = self.as_postgres(["initdb", "-N", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
                                 "--auth-local=peer", "--auth-host=md5"], timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n".join([
                f"listen_addresses = '{DB_ADDRESS}'", f"port = {DB_PORT_UPSTREAM}",
                f"unix_socket_directories = '{self.sockets}'",
                "max_connections = 450",  # 400 proxied sessions at once, plus the superuser's
                "password_encryption = md5", "shared_buffers = 16MB",
                "fsync = off", "synchronous_commit = off", "full_page_writes = off",
            ]) + "\n")
        # Only the Pod's side of the link, with the password; the superuser over the unix socket only.
        (self.data / "pg_hba.conf").write_text(
            "local all postgres peer\n"
            f"host {DB_NAME} {DB_USER} {POD_ADDRESS}/32 md5\n")
        done = self.as_postgres(["pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "start"],
                                timeout=90)
        self.started = True
        assert done.returncode == 0, done.stdout + done.stderr + self.log_text()
        self.sql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'", database="postgres")
        self.sql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}", database="postgres")
        self.sql("CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2) NOT NULL);"
                 + "".join(f"INSERT INTO orders VALUES ({i}, {a});" for i, a in ORDERS)
                 + f"ALTER TABLE orders OWNER TO {DB_USER};")

    def sql(self, query: str, database: str = DB_NAME) -> str:
        """A superuser query made directly on the database host (unix socket): never through the proxy."""
        done = self.as_postgres(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockets),
                                 "-U", "postgres", "-d", database, "-c", query], timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def proxied_backends(self) -> int:
        """Backends whose client is the Pod's side of the link: the proxy's upstream connections."""
        return int(self.sql(f"SELECT count(*) FROM pg_stat_activity WHERE client_addr = '{POD_ADDRESS}'"))

    def end_proxied_backends(self) -> None:
        """After a Pod is gone: its connections' backends end (a handler killed while the link goes away may
        leave its backend waiting for ever), so the next Pod finds PostgreSQL's connection slots free."""
        deadline = time.monotonic() + 5
        while self.proxied_backends() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.sql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE client_addr = '{POD_ADDRESS}'")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.started and (self.data / "postmaster.pid").exists():
            done = self.as_postgres(["pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=60)
            if done.returncode != 0 and (self.data / "postmaster.pid").exists():
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the postmaster we started; its backends exit with it
        # With the netns go the veth ends still in it.
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    db = Database()
    try:
        db.start()
        yield db
    finally:
        db.stop()


@contextlib.contextmanager
def pod_running(pod: dict[str, Any], db: Database) -> Iterator[PodSandbox]:
    """The Pod's sandbox, linked to the database host: veth 192.0.2.1/30 (Pod) <-> 192.0.2.2/30 (database)."""
    with PodSandbox(pod, IMAGES) as sandbox:
        pod_end, db_end = f"ppp{uuid.uuid4().hex[:8]}", f"ppd{uuid.uuid4().hex[:8]}"
        try:
            for argv in (["ip", "link", "add", pod_end, "netns", sandbox.netns, "type", "veth",
                          "peer", "name", db_end, "netns", db.netns],
                         ["ip", "-n", sandbox.netns, "addr", "add", f"{POD_ADDRESS}/30", "dev", pod_end],
                         ["ip", "-n", db.netns, "addr", "add", f"{DB_ADDRESS}/30", "dev", db_end],
                         ["ip", "-n", sandbox.netns, "link", "set", pod_end, "up"],
                         ["ip", "-n", db.netns, "link", "set", db_end, "up"]):
                subprocess.run(argv, check=True)
            yield sandbox
        finally:
            try:
                for process in sandbox.processes:  # nothing of the Pod's may outlive it, even on failure
                    sandbox.stop(process, signal.SIGKILL)
                db.end_proxied_backends()
            finally:
                # Deleting one end removes both, now (a netns deleted later could leave a stale 192.0.2.2 behind).
                subprocess.run(["ip", "-n", db.netns, "link", "delete", db_end], capture_output=True, check=False)


# -- the Pod, as a user gets it -----------------------------------------------------------------------------


def inject(tmp_path: Path, capsys: pytest.CaptureFixture[str], annotations: dict[str, str],
           app: dict[str, Any] | None = None) -> dict[str, Any]:
    """`podpatterns inject -f pod.yaml`, and the Pod it prints."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "shop", "annotations": {"podpatterns.io/inject": "db-ambassador", **annotations}},
           "spec": {"containers": [app or {"name": "app", "image": "postgres:15"}]}}
    manifest = tmp_path / f"pod-{uuid.uuid4().hex[:6]}.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    capsys.readouterr()
    code = podpatterns(["inject", "-f", str(manifest)])
    out, err = capsys.readouterr()
    assert code == 0, err
    injected = yaml.safe_load(out)
    proxy = find(injected, "db-ambassador")
    assert proxy in injected["spec"]["initContainers"] and proxy["restartPolicy"] == "Always"  # a native sidecar
    return injected


def app_endpoint(pod: dict[str, Any]) -> tuple[str, int]:
    """DB_HOST and DB_PORT, as the kubelet gives them to the injected app container."""
    env = container_env(pod, find(pod, "app"))
    return env["DB_HOST"], int(env["DB_PORT"])


def conninfo(pod: dict[str, Any]) -> str:
    host, port = app_endpoint(pod)
    return f"host={host} port={port} user={DB_USER} dbname={DB_NAME}"


# -- sockets in the Pod's network namespace --------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """This thread in the network namespace `name`; sockets made meanwhile belong to it for good."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


def pod_sockets(sandbox: PodSandbox, count: int) -> list[socket.socket]:
    with in_netns(sandbox.netns):
        made = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    for s in made:
        s.settimeout(20)
    return made


def connect_result(sandbox: PodSandbox, address: tuple[str, int]) -> int:
    """0 if a TCP connection from the Pod to `address` is accepted, else the errno (ECONNREFUSED: nothing listens)."""
    (s,) = pod_sockets(sandbox, 1)
    with s:
        return s.connect_ex(address)


class PgError(Exception):
    pass


class PgSession:
    """A PostgreSQL session over a raw socket (protocol 3.0, md5 password): one proxied connection, for cheap."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise PgError("the connection was closed")
            data += chunk
        return data

    def _message(self) -> tuple[bytes, bytes]:
        kind, length = struct.unpack("!cI", self._exactly(5))
        body = self._exactly(length - 4)
        if kind == b"E":
            fields = {f[:1]: f[1:].decode() for f in body.split(b"\0") if f}
            raise PgError(fields.get(b"M", "error"))
        return kind, body

    def _send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!I", len(body) + 4) + body)

    def login(self, user: str, database: str, password: str) -> None:
        params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database)))
        body = struct.pack("!I", 196608) + params + b"\0"
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, body = self._message()
            if kind == b"R":
                code = struct.unpack("!I", body[:4])[0]
                if code == 5:
                    inner = hashlib.md5(password.encode() + user.encode()).hexdigest().encode()
                    self._send(b"p", b"md5" + hashlib.md5(inner + body[4:8]).hexdigest().encode() + b"\0")
                elif code != 0:
                    raise PgError(f"unexpected authentication request {code}")
            elif kind == b"Z":
                return

    def query(self, sql: str) -> list[list[str | None]]:
        self._send(b"Q", sql.encode() + b"\0")
        rows: list[list[str | None]] = []
        while True:
            kind, body = self._message()
            if kind == b"D":
                (count,), at, row = struct.unpack("!H", body[:2]), 2, []
                for _ in range(count):
                    (size,) = struct.unpack("!i", body[at:at + 4])
                    at += 4
                    row.append(None if size < 0 else body[at:at + size].decode())
                    at += max(size, 0)
                rows.append(row)
            elif kind == b"Z":
                return rows

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(b"X", b"")
        self.sock.close()


# -- processes and cgroups ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The live children of a process (the proxy's forked connection handlers)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (64Mi, 128M, 1Gi, 1e6, 65536) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    found = re.fullmatch(r"([0-9.e+]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    assert found, f"unsupported quantity {quantity!r}"
    return int(float(found.group(1)) * units.get(found.group(2) or "", 1))


class MemoryCgroup:
    """A memory cgroup limited to `limit` bytes, as the kubelet gives a container: v1 or v2, whichever is here."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        lines = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
        name = f"pp-ambassador-{uuid.uuid4().hex[:8]}"
        if self.v2:
            root = Path("/sys/fs/cgroup")
            own = root / next(path for _, controllers, path in lines if controllers == "").lstrip("/")
            self.path = self._v2_parent(root, own) / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(limit))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
        else:
            root = Path("/sys/fs/cgroup/memory")
            own = root / next(path for _, controllers, path in lines
                              if "memory" in controllers.split(",")).lstrip("/")
            self.path = (own if own.is_dir() else root) / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
            if (self.path / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
                (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit))

    @staticmethod
    def _v2_parent(root: Path, own: Path) -> Path:
        """The nearest cgroup, from ours up, whose children get the memory controller (a cgroup with processes
        of its own, such as ours, cannot hand it down; the root can)."""
        for parent in [own, *own.parents]:
            if not parent.is_relative_to(root):
                break
            if "memory" in (parent / "cgroup.subtree_control").read_text().split():
                return parent
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+memory")
                return parent
        raise AssertionError(f"no cgroup between {own} and {root} can delegate the memory controller")

    def _read(self, v1: str, v2: str) -> str:
        return (self.path / (v2 if self.v2 else v1)).read_text()

    def procs(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def usage(self) -> int:
        return int(self._read("memory.usage_in_bytes", "memory.current"))

    def peak(self) -> int:
        return int(self._read("memory.max_usage_in_bytes", "memory.peak"))

    def oom_kills(self) -> int:
        stats = dict(line.split() for line in self._read("memory.oom_control", "memory.events").splitlines())
        return int(stats.get("oom_kill", 0)) + int(stats.get("under_oom", 0))

    def limit_hits(self) -> int:
        """memory.failcnt (v1) or the `max` events (v2): times usage reached the limit (reclaim, not yet OOM)."""
        if self.v2:
            return int(dict(line.split() for line in self._read("", "memory.events").splitlines())["max"])
        return int(self._read("memory.failcnt", ""))

    def remove(self) -> None:
        deadline = time.monotonic() + 10
        while self.path.exists():
            try:
                self.path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def start_in_cgroup(sandbox: PodSandbox, name: str, cgroup: MemoryCgroup, log: Path) -> subprocess.Popen[bytes]:
    """The container `name` as PodSandbox.start runs it, but inside `cgroup` from its first instruction on."""
    argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup.path / "cgroup.procs"),
            *sandbox.wrap(name, sandbox.argv(name))]
    with open(log, "wb") as err:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                   start_new_session=True)
    sandbox.processes.append(process)
    return process


def probe_until_started(sandbox: PodSandbox, name: str, started_at: float) -> tuple[int, float]:
    """The kubelet's startupProbe loop: an attempt every periodSeconds until one passes, at most failureThreshold.
    Returns (attempts, seconds from the container's start to the passing attempt)."""
    spec = find(sandbox.pod, name)["startupProbe"]
    period, threshold = spec.get("periodSeconds", 10), spec.get("failureThreshold", 3)
    for attempt in range(1, threshold + 1):
        if sandbox.probe(name, "startupProbe"):
            return attempt, time.monotonic() - started_at
        time.sleep(max(0.0, started_at + attempt * period - time.monotonic()))
    raise AssertionError(f"the startupProbe of {name} failed {threshold} times: the kubelet would restart it")


def stderr_of(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


# -- the tests ------------------------------------------------------------------------------------------


APP_QUERY = ["-c", "SELECT 1", "-c", "SELECT count(*), sum(amount) FROM orders",
             "-c", "SELECT host(inet_server_addr()), host(inet_client_addr())"]


@pytest.mark.slow
def test_the_app_starts_only_after_the_proxy_listens(database, tmp_path, capsys):
    app = {"name": "app", "image": "postgres:15",
           "command": ["psql", f"host=$(DB_HOST) port=$(DB_PORT) user={DB_USER} dbname={DB_NAME}",
                       "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", *APP_QUERY],
           "env": [{"name": "PGPASSWORD", "value": DB_PASSWORD}]}
    pod = inject(tmp_path, capsys, {UPSTREAM_KEY: f"{DB_ADDRESS}:{DB_PORT_UPSTREAM}"}, app=app)
    host, port = app_endpoint(pod)
    assert (host, port) == ("127.0.0.1", 5432)
    with pod_running(pod, database) as sandbox:
        # Nothing listens yet: the probe fails, and the app's connection would be refused.
        assert sandbox.probe("db-ambassador", "startupProbe") is False
        assert connect_result(sandbox, (host, port)) == 111  # ECONNREFUSED

        # The kubelet starts the sidecar; right away (no probe passed yet) the app would still be refused.
        log = tmp_path / "db-ambassador.stderr"
        with open(log, "wb") as err:
            started_at = time.monotonic()
            proxy = sandbox.start("db-ambassador", stdout=subprocess.DEVNULL, stderr=err)
        refused_right_after_start = connect_result(sandbox, (host, port))
        refused_at = time.monotonic() - started_at
        assert refused_right_after_start == 111, "the proxy listened before the test could look: no evidence"

        attempts, seconds = probe_until_started(sandbox, "db-ambassador", started_at)
        assert proxy.poll() is None, stderr_of(log)
        print(f"\n[db-ambassador] startupProbe passed on attempt {attempts}, {seconds * 1000:.0f} ms after the "
              f"container started; a connection {refused_at * 1000:.1f} ms after the start was refused "
              f"(ECONNREFUSED), and so was the probe before the start")

        # Only now the app container: psql to $(DB_HOST):$(DB_PORT), which must work on its first try.
        app_process = sandbox.start("app")
        out, err = app_process.communicate(timeout=30)
        assert app_process.returncode == 0, err.decode() + stderr_of(log)
        assert out.decode().split() == ["1", "3|100.00", f"{DB_ADDRESS}|{POD_ADDRESS}"]
        assert proxy.poll() is None


@pytest.mark.slow
def test_concurrent_connections_are_bounded_by_maxConnections(database, tmp_path, capsys):
    pod = inject(tmp_path, capsys, {UPSTREAM_KEY: f"{DB_ADDRESS}:{DB_PORT_UPSTREAM}",
                                    "db-ambassador.podpatterns.io/maxConnections": "5"})
    assert "max-children=5" in ",".join(find(pod, "db-ambassador")["args"])
    sessions, limit, sleep = 12, 5, 2
    with pod_running(pod, database) as sandbox:
        log = tmp_path / "db-ambassador.stderr"
        with open(log, "wb") as err:
            started_at = time.monotonic()
            proxy = sandbox.start("db-ambassador", stdout=subprocess.DEVNULL, stderr=err)
        probe_until_started(sandbox, "db-ambassador", started_at)
        wait_for(lambda: not children(proxy.pid) and database.proxied_backends() == 0, 10,
                 "the probe's connection to end")

        seen: list[int] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.append(database.proxied_backends())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        env = {"PATH": os.environ["PATH"], "PGPASSWORD": DB_PASSWORD, "HOME": str(tmp_path)}
        began = time.monotonic()
        watcher.start()
        clients = [sandbox.app_popen(["psql", conninfo(pod), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                      "-c", f"SELECT pg_sleep({sleep})", "-c", f"SELECT 'session {i} done'"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                   for i in range(sessions)]
        try:
            results = [(c.wait(timeout=40), *c.communicate()) for c in clients]
        finally:
            done.set()
            watcher.join()
        elapsed = time.monotonic() - began
        overflows = listen_overflows(sandbox)

        failed = [(i, code, err.decode()) for i, (code, _, err) in enumerate(results) if code != 0]
        assert not failed, f"refused or failed sessions: {failed}\n{stderr_of(log)}"
        assert [out.decode().split()[-1] for _, out, _ in results] == ["done"] * sessions
        print(f"\n[db-ambassador] maxConnections={limit}: {sessions} sessions of pg_sleep({sleep}) all succeeded in "
              f"{elapsed:.1f} s; at most {max(seen)} proxied backends at once ({len(seen)} samples); "
              f"listen-queue overflows in the Pod: {overflows}")
        assert seen and max(seen) == limit, seen  # the limit was reached, and never passed
        # Sessions of 2 s each, at most 5 at a time: 3 rounds at least. Without the limit all 12 end in ~2 s.
        assert elapsed >= (sessions + limit - 1) // limit * sleep, elapsed
        assert proxy.poll() is None, stderr_of(log)


def listen_overflows(sandbox: PodSandbox) -> int:
    """TcpExt ListenOverflows of the Pod's network namespace: connections the listen queue could not hold
    (the client's SYN was dropped and retransmitted)."""
    text = sandbox.app(["cat", "/proc/net/netstat"], check=True).stdout.splitlines()
    header, values = next((h.split(), v.split()) for h, v in zip(text[::2], text[1::2]) if h.startswith("TcpExt:"))
    return int(dict(zip(header, values))["ListenOverflows"])


@pytest.mark.slow
def test_the_proxy_fits_its_memory_limit_at_maxConnections(database, tmp_path, capsys):
    # The most the entry lets a user ask for (400), with the memory limit the entry gives its container (64Mi).
    # Each connection is a forked socat: its page tables, kernel stack and copied pages are charged to the
    # container. The socat here is this machine's (Debian 1.7.4, glibc, 14 shared libraries); the image's
    # (Alpine 1.8.0.3, musl, fewer libraries) may cost somewhat less per connection.
    connections = builtin_entries()["db-ambassador"].parameters["maxConnections"].maximum
    pod = inject(tmp_path, capsys, {UPSTREAM_KEY: f"{DB_ADDRESS}:{DB_PORT_UPSTREAM}",
                                    "db-ambassador.podpatterns.io/maxConnections": str(connections)})
    assert f"max-children={connections}" in ",".join(find(pod, "db-ambassador")["args"])
    limit = quantity_bytes(find(pod, "db-ambassador")["resources"]["limits"]["memory"])
    host, port = app_endpoint(pod)
    cgroup = MemoryCgroup(limit)
    sessions: list[PgSession] = []
    try:
        with pod_running(pod, database) as sandbox, contextlib.ExitStack() as later:
            later.callback(lambda: [session.close() for session in sessions])  # before the proxy is stopped
            log = tmp_path / "db-ambassador.stderr"
            started_at = time.monotonic()
            proxy = start_in_cgroup(sandbox, "db-ambassador", cgroup, log)
            probe_until_started(sandbox, "db-ambassador", started_at)
            assert cgroup.procs() and set(cgroup.procs()) <= {proxy.pid, *children(proxy.pid)}
            wait_for(lambda: not children(proxy.pid) and database.proxied_backends() == 0, 10,
                     "the probe's connection to end")
            idle = cgroup.usage()

            began = time.monotonic()
            failure = None
            for sock in pod_sockets(sandbox, connections):
                try:
                    sock.connect((host, port))
                    session = PgSession(sock)
                    session.login(DB_USER, DB_NAME, DB_PASSWORD)  # so the proxy's handler has connected upstream
                except (OSError, PgError) as err:
                    failure = f"connection {len(sessions) + 1} of {connections} failed: {err!r}"
                    sock.close()
                    break
                sessions.append(session)
            opened = time.monotonic() - began

            listening = proxy.poll() is None
            handlers = [pid for pid in cgroup.procs() if pid != proxy.pid]  # still there if the proxy died
            backends = database.proxied_backends()
            answers = []
            for session in sessions:
                with contextlib.suppress(OSError, PgError):
                    answers.append(session.query("SELECT pg_backend_pid(), host(inet_client_addr())"))
            peak, usage, hits, ooms = cgroup.peak(), cgroup.usage(), cgroup.limit_hits(), cgroup.oom_kills()
            print(f"\n[db-ambassador] maxConnections={connections}, memory limit {limit // 2**20} MiB "
                  f"(cgroup v{2 if cgroup.v2 else 1}): {len(sessions)} sessions opened in {opened:.1f} s, "
                  f"{len(answers)} answered, {len(handlers)} connection handlers alive, proxy "
                  f"{'listening' if listening else f'dead (exit {proxy.returncode})'}; memory idle "
                  f"{idle / 2**20:.2f} MiB, now {usage / 2**20:.2f} MiB, peak {peak} bytes ({peak / 2**20:.2f} MiB, "
                  f"{100 * peak / limit:.0f}% of the limit), {(peak - idle) / max(len(sessions), 1) / 1024:.1f} KiB "
                  f"per connection; limit hits {hits}, OOM kills {ooms}" + (f"; {failure}" if failure else ""))

            assert ooms == 0, (
                f"OOM kill in the proxy's cgroup with {len(sessions)} of {connections} connections open ({failure}): "
                f"{(peak - idle) / max(len(sessions), 1) / 1024:.0f} KiB each does not fit {limit // 2**20} MiB")
            assert listening, f"the proxy exited: {proxy.returncode}\n{stderr_of(log)}"
            assert failure is None and len(sessions) == connections
            assert len(handlers) == connections and set(children(proxy.pid)) == set(handlers)  # every one alive
            assert backends == connections, "every connection reaches PostgreSQL through its own handler"
            assert len(answers) == connections and {a[0][1] for a in answers} == {POD_ADDRESS}
            assert len({a[0][0] for a in answers}) == connections  # as many distinct backends answered
            assert peak < limit
    finally:
        cgroup.remove()


HOST_254 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62])
HOST_253 = HOST_254[:-1]


@pytest.mark.parametrize("upstream", ["pg..prod:5432", "pg:0", "pg:65536", ".pg:5432", "pg-.x:5432", "pg",
                                      f"{HOST_254}:5432", "-pg:5432", "pg:5432x", "pg_db:5432", "pg:05432",
                                      f"{'a' * 64}.svc:5432", "10.1.2.3:6432 -d", "pg:5432,fork"])
def test_inject_refuses_a_bad_upstream(tmp_path, capsys, upstream):
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shop", "annotations": {
        "podpatterns.io/inject": "db-ambassador", UPSTREAM_KEY: upstream}},
        "spec": {"containers": [{"name": "app", "image": "postgres:15"}]}}))
    code = podpatterns(["inject", "-f", str(manifest)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    shown = upstream if len(upstream) <= 100 else upstream[:100] + "…"  # a long value is cut in the message
    assert f"denied: annotation {UPSTREAM_KEY}: value {shown!r} is not accepted" in err, err


@pytest.mark.parametrize("upstream", ["pg.prod.svc:5432", "10.1.2.3:6432", "pg.prod.svc.cluster.local.:5432",
                                      "pg:1", "pg:65535", f"{HOST_253}:5432", f"{'a' * 63}.svc:5432"])
def test_inject_accepts_a_good_upstream(tmp_path, capsys, upstream):
    pod = inject(tmp_path, capsys, {UPSTREAM_KEY: upstream})
    assert find(pod, "db-ambassador")["args"][-1] == f"TCP:{upstream}"
