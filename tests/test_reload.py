"""Hot reload of the catalogue and the policy, through `podpatterns serve --catalog DIR --policy FILE`.

Reviews are sent without a pause while the files go good → broken → good, by Python clients that check
every answer and by `hey` (Go's HTTP client, as the apiserver uses); not one may fail. The files are also
published the way the kubelet updates a mounted ConfigMap: a new timestamped directory and an atomic swap
of the `..data` symlink the visible names point through.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from bench.run import Load, parse_hey
from tests.helpers import Server, apply, assert_valid_pod, ops_of, review_with
from webhook.catalog import catalogue
from webhook.core.configuration import Configuration, ConfigurationHolder
from webhook.core.engine import Settings
from webhook.server import reload

pytestmark = pytest.mark.slow


def entry(image: str = "registry.example/tracer:1.0", level: str = "info") -> str:
    return f"""\
apiVersion: podpatterns.io/v1alpha1
kind: PatternTemplate
metadata:
  name: tracer
spec:
  pattern: sidecar
  description: Ships the app's traces (a stand-in image, never pulled by these tests).
  lifecycle: regular
  parameters:
  - {{name: level, type: string, default: {level}}}
  containers:
  - name: tracer
    image: {image}
    args: ["--level=${{params.level}}"]
"""


BROKEN_ENTRY = (entry().replace("type: string", "type: str"), 10,
                "spec.parameters[0]: parameter level: type 'str' is not one of string, integer, boolean, path, hostPort, quantity")
POLICY = """\
apiVersion: podpatterns.io/v1alpha1
kind: Policy
spec:
  rules:
  - name: trace-everything
    inject: [tracer]
"""
POLICY_MORE = POLICY + "  - name: json-logs\n    inject: [json-log-adapter]\n"
BROKEN_POLICY = (POLICY + "    mandatry: true\n", 7, "unknown field 'mandatry' in spec.rules[0]")
ALLOWED_RULE_FIELDS = ("allowed: allowedEntries, enforcement, inject, mandatory, maxContainers, name, namespaceSelector, "
                       "parameterBounds, podSelector, resources")

# What a review is answered with: (entries injected, the tracer's image, its --level argument).
V1 = (("tracer",), "registry.example/tracer:1.0", "--level=info")
V2 = (("tracer",), "registry.example/tracer:2.0", "--level=debug")
V3 = (("tracer", "json-log-adapter"), "registry.example/tracer:2.0", "--level=debug")

BODY = review_with({})  # no annotation: only the policy's rules inject
FAILURES = 'podpatterns_config_reloads_total{result="failure"}'
SUCCESSES = 'podpatterns_config_reloads_total{result="success"}'
LAST_OK = "podpatterns_config_last_reload_success"


def answer_of(response: httpx.Response) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The version an answer serves, and the patched Pod; raises on anything but a good answer."""
    assert response.status_code == 200, response.text
    review = response.json()["response"]
    assert review["allowed"] is True and review["uid"] == BODY["request"]["uid"], review
    pod = apply(BODY["request"]["object"], ops_of(review))
    status = json.loads(pod["metadata"]["annotations"]["podpatterns.io/status"])
    tracer = next(c for c in pod["spec"]["containers"] if c["name"] == "tracer")
    return (tuple(record["entry"] for record in status), tracer["image"], tracer["args"][0]), pod


def version(server: Server) -> tuple[Any, ...]:
    return answer_of(server.mutate(BODY))[0]


class Traffic(threading.Thread):
    """Sends the review back to back on its own connection and checks every answer."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=server.base, verify=ssl.create_default_context(cafile=server.ca), timeout=10)
        self.content = json.dumps(BODY).encode()
        self.served: list[tuple[Any, ...]] = []
        self.failed: list[str] = []
        self.pods: dict[tuple[Any, ...], dict[str, Any]] = {}  # one patched Pod per version, validated at the end
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                response = self.client.post("/mutate", content=self.content, headers={"content-type": "application/json"})
                served, pod = answer_of(response)
            except Exception as err:  # noqa: BLE001 - every kind of failure is counted, none ends the traffic
                self.failed.append(f"{type(err).__name__}: {err}")
                continue
            self.served.append(served)
            self.pods.setdefault(served, pod)

    def stop(self) -> None:
        self.done.set()
        self.join(15)
        self.client.close()


class Hey:
    """`hey` at a steady rate until stopped (it prints its summary on SIGINT)."""

    def __init__(self, server: Server, workdir: Path, rate: int = 400):
        body = workdir / "review.json"
        body.write_text(json.dumps(BODY))
        self.process = subprocess.Popen(
            ["hey", "-z", "120s", "-c", "2", "-q", str(rate // 2), "-t", "10", "-m", "POST", "-T", "application/json",
             "-D", str(body), f"{server.base}/mutate"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> Load:
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=15)
        assert "Requests/sec:" in out, out
        return parse_hey(out)


class ConfigMapVolume:
    """A directory laid out as the kubelet mounts a ConfigMap, updated as the kubelet's atomic writer does."""

    def __init__(self, path: Path, files: dict[str, str]):
        self.path = path
        path.mkdir()
        self.publish(files)

    def publish(self, files: dict[str, str]) -> None:
        old = (self.path / "..data").resolve() if (self.path / "..data").exists() else None
        stamp = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S."), dir=self.path))
        for name, text in files.items():
            (stamp / name).write_text(text)
        os.symlink(stamp.name, self.path / "..data_tmp")
        os.replace(self.path / "..data_tmp", self.path / "..data")  # the one atomic step
        for link in self.path.iterdir():
            if not link.name.startswith(".") and link.name not in files:
                link.unlink()
        for name in files:
            if not (self.path / name).is_symlink():
                os.symlink(f"..data/{name}", self.path / name)
        if old is not None:
            shutil.rmtree(old)


def start(workdir: Path, catalog: Path, policy: Path, *args: str) -> Server:
    return Server(workdir, "--quiet", "--catalog", str(catalog), "--policy", str(policy), *args)


def plain_files(workdir: Path) -> tuple[Path, Path, Server]:
    """The first version in an ordinary directory and file, served with a short poll interval."""
    catalog, policy = workdir / "catalog", workdir / "policy.yaml"
    catalog.mkdir()
    (catalog / "tracer.yaml").write_text(entry())
    policy.write_text(POLICY)
    return catalog, policy, start(workdir, catalog, policy, "--reload-seconds", "0.2")


def metric(server: Server, sample: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} is not in /metrics")


def wait_for(what: str, condition: Callable[[], bool], seconds: float = 15) -> float:
    """Seconds until `condition` held (polled every 20 ms); fails after `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"still waiting after {seconds} s for {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def reload_errors(server: Server) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "podpatterns" and line["level"] == "error"]


def test_good_broken_good_while_serving_fails_no_request(tmp_path):
    catalog, policy, server = plain_files(tmp_path)
    traffic = [Traffic(server) for _ in range(2)]
    try:
        for thread in traffic:
            thread.start()
        hey = Hey(server, tmp_path)
        wait_for("the first answers", lambda: all(len(t.served) > 10 for t in traffic))

        # Rewritten in place, as an editor would: broken, then a new image and parameter default.
        (catalog / "tracer.yaml").write_text(BROKEN_ENTRY[0])
        wait_for("the failed reload", lambda: metric(server, FAILURES) == 1)
        assert version(server) == V1 and metric(server, LAST_OK) == 0
        (catalog / "tracer.yaml").write_text(entry("registry.example/tracer:2.0", "debug"))
        catalogue_pickup = wait_for("the new entry", lambda: version(server) == V2)
        assert metric(server, LAST_OK) == 1

        policy.write_text(BROKEN_POLICY[0])
        wait_for("the refused policy", lambda: metric(server, FAILURES) == 2)
        assert version(server) == V2
        policy.write_text(POLICY_MORE)
        policy_pickup = wait_for("the added rule", lambda: version(server) == V3)
        time.sleep(0.3)  # some traffic on the last version too
    finally:
        for thread in traffic:
            thread.stop()
        load = hey.stop()
        successes = metric(server, SUCCESSES)
        server.stop()

    served = [v for t in traffic for v in t.served]
    assert [t.failed for t in traffic] == [[], []]
    assert load.failed == 0 and load.ok > 0
    for thread in traffic:
        # Each client saw the versions in order, and nothing else: no broken, mixed or flapping state.
        assert [v for i, v in enumerate(thread.served) if i == 0 or v != thread.served[i - 1]] == [V1, V2, V3]
        for pod in thread.pods.values():
            assert_valid_pod(pod)
    assert successes == 2
    errors = reload_errors(server)
    assert [e["problems"] for e in errors] == [[f"{catalog / 'tracer.yaml'}:{BROKEN_ENTRY[1]}: {BROKEN_ENTRY[2]}"],
                                               [f"{policy}:{BROKEN_POLICY[1]}: {BROKEN_POLICY[2]}; {ALLOWED_RULE_FIELDS}"]]
    print(f"\nreload under load: {len(served)} checked answers + {load.ok} from hey, 0 failed; file change to new "
          f"answers: catalogue {catalogue_pickup:.2f} s, policy {policy_pickup:.2f} s (polling every 0.2 s)")


def test_a_configmap_volume_swap_is_picked_up_and_a_broken_one_is_not(tmp_path):
    catalog = ConfigMapVolume(tmp_path / "catalog", {"tracer.yaml": entry()})
    policy = ConfigMapVolume(tmp_path / "policy", {"policy.yaml": POLICY})
    server = start(tmp_path, catalog.path, policy.path / "policy.yaml")  # the default poll interval
    try:
        assert version(server) == V1
        catalog.publish({"tracer.yaml": entry("registry.example/tracer:2.0", "debug")})
        pickup = wait_for("the swapped catalogue", lambda: version(server) == V2)

        catalog.publish({"tracer.yaml": BROKEN_ENTRY[0]})
        wait_for("the failed reload", lambda: metric(server, FAILURES) == 1)
        # A good policy waits for a good catalogue: the two are only ever loaded and served together.
        policy.publish({"policy.yaml": POLICY_MORE})
        wait_for("the second failed reload", lambda: metric(server, FAILURES) == 2)
        assert version(server) == V2
        catalog.publish({"tracer.yaml": entry("registry.example/tracer:2.0", "debug")})
        wait_for("the fixed catalogue and the new policy", lambda: version(server) == V3)
        assert metric(server, SUCCESSES) == 2 and metric(server, LAST_OK) == 1
    finally:
        server.stop()
    problem = f"{catalog.path / 'tracer.yaml'}:{BROKEN_ENTRY[1]}: {BROKEN_ENTRY[2]}"
    assert [e["problems"] for e in reload_errors(server)] == [[problem], [problem]]
    print(f"\nConfigMap swap to new answers: {pickup:.2f} s (default poll interval)")


def test_a_catalogue_change_that_breaks_the_policy_is_refused_whole(tmp_path):
    catalog, policy, server = plain_files(tmp_path)
    try:
        # The entry the policy's rule injects goes, replaced by another one: the catalogue alone is valid.
        (catalog / "other.yaml").write_text(entry().replace("name: tracer", "name: other-tracer"))
        (catalog / "tracer.yaml").unlink()
        wait_for("the refused reload", lambda: metric(server, FAILURES) == 1)
        assert version(server) == V1 and metric(server, SUCCESSES) == 0 and metric(server, LAST_OK) == 0
        (catalog / "tracer.yaml").write_text(entry("registry.example/tracer:2.0", "debug"))
        wait_for("the restored entry", lambda: version(server) == V2)
    finally:
        server.stop()
    errors = reload_errors(server)
    assert len(errors) == 1
    assert errors[0]["message"] == "reload refused: the policy does not load; serving the last good configuration"
    # Checked against the new catalogue, which was never served: it knows other-tracer.
    assert errors[0]["problems"] == [f"{policy}:6: inject: no catalogue entry 'tracer'; known entries: db-ambassador, "
                                     "json-log-adapter, log-shipper, other-tracer"]


def test_stop_ends_the_watch_promptly(tmp_path):
    holder = ConfigurationHolder(Configuration(catalogue.load(), Settings()))
    watcher = reload.ConfigurationReloader(holder, [tmp_path], None, holder.current.settings, interval=60)
    watcher.start()
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 1
    assert not watcher._thread.is_alive()
