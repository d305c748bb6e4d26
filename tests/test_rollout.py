"""`podpatterns rollout` against the stand-in API, with small threads playing the workload controllers."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import podpatterns_command
from tests.kubeapi import STRATEGIC_MERGE_PATCH, KubeApi
from tests.test_status import child, old_catalogue, pod, store, store_pod, workload
from webhook.cli import commands as cli
from webhook.cli.rollout import duration
from webhook.core.rollouts import RESTARTED_AT, progress

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
RUNNING: list[Controller] = []


@pytest.fixture(autouse=True)
def _halt_controllers():
    yield
    while RUNNING:
        RUNNING.pop().halt.set()


class Controller(threading.Thread):
    """Plays a workload's controller after a restart: it observes the new generation, replaces the Pods in two steps
    (the new Pods updated, then available) with Pods the webhook injects from the current catalogue, and updates the
    status as the real controller does. With `stall`, it observes the generation but no new Pod ever comes up; with
    `deadline` too, it then marks the Deployment as past its progressDeadlineSeconds."""

    def __init__(self, api: KubeApi, path: str, stall: bool = False, deadline: bool = False):
        super().__init__(daemon=True)
        self.api, self.path, self.stall, self.deadline = api, path, stall, deadline
        self.kind = {"deployments": "Deployment", "statefulsets": "StatefulSet", "daemonsets": "DaemonSet"}[path.split("/")[-2]]
        self.namespace, self.name = path.split("/")[-3], path.split("/")[-1]
        self.finished: float | None = None
        self.halt = threading.Event()
        RUNNING.append(self)
        self.start()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            obj = self.api.get(self.path)
            if obj["metadata"]["generation"] > obj["status"]["observedGeneration"]:
                self.roll(obj)
                return

    def roll(self, obj: dict[str, Any]) -> None:
        generation, status = obj["metadata"]["generation"], obj["status"]
        time.sleep(0.2)
        desired = status.get("desiredNumberScheduled", obj["spec"].get("replicas", 1))
        self.set_status(observedGeneration=generation, **self.counts(updated=0 if self.stall else 1, available=0,
                                                                     desired=desired))
        if self.stall:
            if self.deadline:
                time.sleep(0.3)
                self.set_status(conditions=[{"type": "Progressing", "status": "False",
                                             "reason": "ProgressDeadlineExceeded"}])
            return
        time.sleep(0.3)
        with self.api.lock:
            for path in [p for p in self.api.objects if p.startswith(f"/api/v1/namespaces/{self.namespace}/pods/{self.name}-")]:
                self.api.delete(path)
        owner = ("ReplicaSet", f"{self.name}-new") if self.kind == "Deployment" else (self.kind, self.name)
        if self.kind == "Deployment":
            store(self.api, child("ReplicaSet", f"{self.name}-new", self.namespace, ("Deployment", self.name)))
        for i in range(desired):
            store_pod(self.api, pod(f"{self.name}-new-{i}", self.namespace, owned_by=owner))
        self.set_status(**self.counts(updated=desired, available=desired, desired=desired))
        self.finished = time.monotonic()

    def counts(self, updated: int, available: int, desired: int) -> dict[str, Any]:
        if self.kind == "DaemonSet":
            return {"updatedNumberScheduled": updated, "numberAvailable": available, "numberReady": available,
                    "desiredNumberScheduled": desired}
        revision = f"{self.name}-2" if updated == desired else f"{self.name}-1"
        return {"updatedReplicas": updated, "availableReplicas": available, "readyReplicas": available,
                "replicas": desired + (0 if updated == desired else 1), "currentRevision": revision,
                "updateRevision": f"{self.name}-2"}

    def set_status(self, **changes: Any) -> None:
        with self.api.lock:  # the status subresource: spec and generation untouched
            obj = self.api.get(self.path)
            obj["status"].update(changes)
            self.api.put(obj, self.path)


def populate(api: KubeApi, tmp_path: Path) -> dict[str, str]:
    """Namespace shop: three stale workloads (a Deployment of 2, a StatefulSet, a DaemonSet), a current Deployment,
    and stale Pods nobody restarts: a bare Pod, a Job's, a CronJob's."""
    old = old_catalogue(tmp_path / "old-catalogue")
    paths = {}
    paths["checkout"] = store(api, workload("Deployment", "checkout", "shop", replicas=2))
    store(api, child("ReplicaSet", "checkout-5d4f8b", "shop", ("Deployment", "checkout")))
    for suffix in ("x2k9p", "q8w3z"):
        store_pod(api, pod(f"checkout-5d4f8b-{suffix}", "shop", owned_by=("ReplicaSet", "checkout-5d4f8b"), entries=old))
    paths["orders"] = store(api, workload("StatefulSet", "orders", "shop"))
    store_pod(api, pod("orders-0", "shop", owned_by=("StatefulSet", "orders"), entries=old))
    paths["node-agent"] = store(api, workload("DaemonSet", "node-agent", "shop"))
    store_pod(api, pod("node-agent-h7t2c", "shop", owned_by=("DaemonSet", "node-agent"), entries=old))
    paths["web"] = store(api, workload("Deployment", "web", "shop"))
    store(api, child("ReplicaSet", "web-8c7d6e", "shop", ("Deployment", "web")))
    store_pod(api, pod("web-8c7d6e-a1b2c", "shop", owned_by=("ReplicaSet", "web-8c7d6e")))
    store_pod(api, pod("debug", "shop", entries=old))
    paths["job"] = store(api, child("Job", "migrate", "shop", None))
    store_pod(api, pod("migrate-8fj3w", "shop", owned_by=("Job", "migrate"), entries=old))
    store(api, child("Job", "nightly-29014", "shop", ("CronJob", "nightly")))
    store_pod(api, pod("nightly-29014-5kq2d", "shop", owned_by=("Job", "nightly-29014"), entries=old))
    return paths


@pytest.fixture
def cluster(tmp_path):
    with KubeApi() as api:
        paths = populate(api, tmp_path)
        yield api, str(api.kubeconfig(tmp_path / "kubeconfig")), paths


def rollout(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["rollout", *args])
    out, err = capsys.readouterr()
    return code, out, err


def writes(api: KubeApi) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in api.requests if r.method != "GET"]


def test_it_restarts_each_stale_workload_after_the_previous_one_rolled_out(cluster, capsys):
    api, kubeconfig, paths = cluster
    controllers = {name: Controller(api, paths[name]) for name in ("checkout", "orders", "node-agent", "web")}
    started = time.monotonic()
    code, out, err = rollout(capsys, "--kubeconfig", kubeconfig, "-n", "shop", "--timeout", "30s")
    assert code == 0, err
    # One restart patch per stale workload, in the order shown, nothing else written: the current Deployment, the
    # bare Pod and the Jobs are left alone.
    assert writes(api) == [("PATCH", paths["node-agent"]), ("PATCH", paths["checkout"]), ("PATCH", paths["orders"])]
    patches = api.requested("PATCH")
    for request in patches:
        assert request.content_type == STRATEGIC_MERGE_PATCH
        at = request.body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        assert RFC3339.match(at) and request.body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
    for name in ("node-agent", "checkout", "orders"):
        stored = api.get(paths[name])
        assert RESTARTED_AT in stored["spec"]["template"]["metadata"]["annotations"]
        assert stored["metadata"]["generation"] == 2 and stored["status"]["observedGeneration"] == 2
    # Each restart waited for the previous workload's rollout to finish.
    assert started < controllers["node-agent"].finished < patches[1].at
    assert controllers["checkout"].finished < patches[2].at
    assert controllers["web"].finished is None and api.get(paths["web"])["metadata"]["generation"] == 1
    lines = out.splitlines()
    assert lines[0].split() == ["WORKLOAD", "STALE", "ENTRIES", "STALE", "PODS", "ACTION"]
    assert [line.split()[0] for line in lines[1:7]] == ["cronjob/nightly", "daemonset/node-agent", "deployment/checkout",
                                                        "job/migrate", "pod/debug", "statefulset/orders"]
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in lines[1:7]}
    assert rows["deployment/checkout"] == ["log-shipper", "2/2", "restart"]
    assert rows["pod/debug"] == ["log-shipper", "1/1", "not restarted: a bare Pod: delete it and create it again"]
    assert rows["job/migrate"] == ["log-shipper", "1/1", "not restarted: a Job: let it finish, or delete it and create it again"]
    assert 'deployment/checkout in namespace shop: deployment "checkout" successfully rolled out' in out
    assert 'daemonset/node-agent in namespace shop: daemon set "node-agent" successfully rolled out' in out
    assert lines[-1] == "3 workload(s) restarted and rolled out"
    # What is stale now is what rollout leaves to the user.
    capsys.readouterr()
    assert cli.main(["status", "--kubeconfig", kubeconfig, "-n", "shop", "--stale", "-o", "json"]) == 1
    stale = json.loads(capsys.readouterr().out)
    assert [w["name"] for w in stale["workloads"]] == ["nightly", "migrate", "debug"]


def test_dry_run_prints_the_plan_and_writes_nothing(cluster, capsys):
    api, kubeconfig, _ = cluster
    code, out, err = rollout(capsys, "--kubeconfig", kubeconfig, "-A", "--dry-run", "--stale")
    assert code == 0, err
    assert writes(api) == []
    assert out.splitlines()[0].split() == ["NAMESPACE", "WORKLOAD", "STALE", "ENTRIES", "STALE", "PODS", "ACTION"]
    assert out.count(" restart\n") == 3
    assert out.splitlines()[-1] == "dry run: 3 workload(s) would be restarted, in this order; nothing changed"


def test_a_stalled_rollout_stops_there_and_names_what_it_waited_for(cluster):
    api, kubeconfig, paths = cluster
    Controller(api, paths["node-agent"])
    Controller(api, paths["checkout"], stall=True)
    started = time.monotonic()
    done = subprocess.run([*podpatterns_command(), "rollout", "--kubeconfig", kubeconfig, "-n", "shop", "--timeout", "2s"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert 2 <= time.monotonic() - started < 15
    assert done.stderr == ("podpatterns rollout: deployment/checkout in namespace shop did not finish rolling out within "
                           "2s: 0 out of 2 new replicas have been updated; stopped there, not restarted: "
                           "statefulset/orders\n")
    # The StatefulSet after it was never touched.
    assert writes(api) == [("PATCH", paths["node-agent"]), ("PATCH", paths["checkout"])]
    assert api.get(paths["orders"])["metadata"]["generation"] == 1


def test_a_deployment_past_its_progress_deadline_fails_without_waiting_for_the_timeout(cluster, capsys):
    api, kubeconfig, paths = cluster
    Controller(api, paths["node-agent"])
    Controller(api, paths["checkout"], stall=True, deadline=True)
    started = time.monotonic()
    code, _, err = rollout(capsys, "--kubeconfig", kubeconfig, "-n", "shop", "--timeout", "60s")
    assert code == 1 and time.monotonic() - started < 30
    assert err == ('podpatterns rollout: deployment/checkout in namespace shop failed: deployment "checkout" exceeded '
                   'its progress deadline; stopped there, not restarted: statefulset/orders\n')


def test_a_paused_deployment_and_an_on_delete_statefulset_are_listed_not_restarted(cluster, capsys):
    api, kubeconfig, paths = cluster
    for name, change in (("checkout", {"paused": True}), ("orders", {"updateStrategy": {"type": "OnDelete"}})):
        obj = api.get(paths[name])
        obj["spec"].update(change)
        api.put(obj, paths[name])
    Controller(api, paths["node-agent"])
    code, out, err = rollout(capsys, "--kubeconfig", kubeconfig, "-n", "shop", "--timeout", "20s")
    assert code == 0, err
    assert writes(api) == [("PATCH", paths["node-agent"])]
    assert "not restarted: the Deployment is paused: run `kubectl rollout resume` first" in out
    assert "not restarted: updateStrategy OnDelete: a restart replaces no Pod; delete its Pods yourself" in out
    assert out.splitlines()[-1] == "1 workload(s) restarted and rolled out"


def test_nothing_stale_nothing_restarted(tmp_path, capsys):
    with KubeApi() as api:
        store(api, workload("StatefulSet", "orders", "shop"))
        store_pod(api, pod("orders-0", "shop", owned_by=("StatefulSet", "orders")))
        code, out, err = rollout(capsys, "--kubeconfig", str(api.kubeconfig(tmp_path / "kc")), "-n", "shop")
        assert writes(api) == []
    assert (code, out, err) == (0, "No stale Pods in namespace shop: nothing to restart.\n", "")


def test_a_forbidden_patch_exits_2_and_says_forbidden(cluster, capsys):
    api, kubeconfig, paths = cluster
    message = ('daemonsets.apps "node-agent" is forbidden: User "dev" cannot patch resource "daemonsets" in API group '
               '"apps" in the namespace "shop"')
    api.fault("PATCH", paths["node-agent"], status=403, reason="Forbidden", message=message)
    code, _, err = rollout(capsys, "--kubeconfig", kubeconfig, "-n", "shop")
    assert code == 2
    assert err.startswith(f"podpatterns rollout: forbidden: {message} (the user lacks RBAC permission")


def test_an_unreachable_api_exits_2(tmp_path, capsys):
    api = KubeApi()
    kubeconfig = str(api.kubeconfig(tmp_path / "kubeconfig"))
    api.close()
    code, out, err = rollout(capsys, "--kubeconfig", kubeconfig, "-n", "shop", "--dry-run")
    assert (code, out) == (2, "")
    assert err.startswith("podpatterns rollout: cannot reach the Kubernetes API: ")


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400),
                                           ("500ms", 0.5), ("0", 0)])
def test_timeout_takes_go_durations(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "10x", "m", "-5m", "10m junk", ""])
def test_a_bad_timeout_is_refused(text, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["rollout", f"--timeout={text}"])
    assert exit_.value.code == 2
    assert "is not a duration" in capsys.readouterr().err


def test_progress_decides_as_kubectl_rollout_status():
    def deployment(**status):
        return {"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 3},
                "status": {"observedGeneration": 2, **status}}

    assert not progress("Deployment", deployment(observedGeneration=1, updatedReplicas=3, replicas=3,
                                                 availableReplicas=3), 2).done
    assert progress("Deployment", deployment(updatedReplicas=1), 2).message == "1 out of 3 new replicas have been updated"
    assert progress("Deployment", deployment(updatedReplicas=3, replicas=4), 2).message == \
        "1 old replicas are pending termination"
    assert progress("Deployment", deployment(updatedReplicas=3, replicas=3, availableReplicas=2), 2).message == \
        "2 of 3 updated replicas are available"
    assert progress("Deployment", deployment(updatedReplicas=3, replicas=3, availableReplicas=3), 2).done
    # The patched generation counts, even when the object read is an older copy.
    assert not progress("Deployment", deployment(updatedReplicas=3, replicas=3, availableReplicas=3), 3).done
    daemon = {"metadata": {"name": "ds", "generation": 1}, "spec": {},
              "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
                         "numberAvailable": 1}}
    assert progress("DaemonSet", daemon, 1).message == "1 of 2 updated pods are available"
    sts = {"metadata": {"name": "s", "generation": 2},
           "spec": {"replicas": 2, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
           "status": {"observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 1}}
    assert progress("StatefulSet", sts, 2).done  # the partition keeps one Pod on the old revision by design
