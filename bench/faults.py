"""Faults while serving, scripted and bounded: `python3 -m bench.faults [--quick] [--scenario NAME]`.

Each scenario starts `podpatterns serve` as in production (bench/run.py's pinned process, the same
TLS settings), drives it with `hey` at a fixed rate from the other CPU, injects one fault, and reports
what the clients saw. Scenarios:
- sustained:   `--seconds` (default 600) at `--rate` (default 1,000 req/s): errors, latency, RSS over time;
- certificate: the serving certificate and key are replaced on disk mid-load by ones from a new CA;
- catalogue:   a catalogue file is corrupted mid-load, then repaired;
- sigterm:     SIGTERM mid-load; clients stop sending once /readyz says 503 (as the endpoints would).
It prints one JSON line per scenario and exits 1 if any scenario saw a failed request or missed its
expectation, so CI can run `--quick` (a 20-second sustained run and short fault runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
from hashlib import sha256
from pathlib import Path

import httpx

from bench import corpus
from bench.run import Load, Process, free_port, hey

BUILTIN = Path(__file__).resolve().parent.parent / "webhook" / "catalog" / "builtin"


class Bench:
    """The files one scenario needs: certificates, a catalogue copy, the request body."""

    def __init__(self, work: Path):
        from webhook import certs

        self.work = work
        self.tls = work / "tls"
        certs.generate(certs.CertPaths(self.tls), ["localhost"], ["127.0.0.1"])
        self.catalogue = work / "catalogue"
        shutil.copytree(BUILTIN, self.catalogue)
        self.body = work / "5KB-all-three.json"
        self.body.write_bytes(corpus.generated(corpus.SIZES["5KB"], corpus.ALL_THREE))

    def serve(self, *extra: str) -> Served:
        port, health = free_port(), free_port()
        command = [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--health-port", str(health),
                   "--tls-cert", str(self.tls / "tls.crt"), "--tls-key", str(self.tls / "tls.key"),
                   "--catalog", str(self.catalogue), "--quiet", "--log-level", "warning", *extra]
        return Served(Process("podpatterns", command, port), health)


class Served:
    def __init__(self, process: Process, health_port: int):
        self.process, self.health = process, f"http://127.0.0.1:{health_port}"
        self.url = process.url

    def under_load(self, body: Path, seconds: float, rate: int) -> tuple[threading.Thread, list[Load]]:
        """hey at `rate` req/s for `seconds` in a thread; its result lands in the list."""
        result: list[Load] = []
        workers = max(1, rate // 100)
        thread = threading.Thread(target=lambda: result.append(
            hey(self.url, body, seconds=seconds, concurrency=workers, rate_per_worker=rate / workers)))
        thread.start()
        return thread, result

    def metric(self, name: str) -> float | None:
        for line in httpx.get(f"{self.health}/metrics", timeout=5).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None

    def log(self) -> str:
        """The server's stderr, read once after it has stopped."""
        return self.process.process.stderr.read().decode() if self.process.process.stderr else ""


def sustained(bench: Bench, seconds: float, rate: int) -> dict:
    served = bench.serve()
    try:
        thread, result = served.under_load(bench.body, seconds, rate)
        samples = []
        started = time.monotonic()
        while thread.is_alive():
            samples.append((round(time.monotonic() - started, 1), round(served.process.rss_mib(), 1)))
            thread.join(max(1.0, seconds / 20))
    finally:
        served.process.stop()
    load = result[0]
    settled = next((rss for at, rss in samples if at >= seconds * 0.1), samples[0][1])  # after warm-up
    growth = 100 * (samples[-1][1] - settled) / settled
    return {"scenario": "sustained", "seconds": seconds, "rate": rate, "achieved": round(load.rps),
            "ok": load.ok, "failed": load.failed, "p50_ms": round(load.p50_ms, 2), "p99_ms": round(load.p99_ms, 2),
            "rss_mib_after_warmup": settled, "rss_mib_end": samples[-1][1], "rss_growth_pct": round(growth, 1),
            "passed": load.failed == 0 and load.ok > 0 and growth <= 10}


def certificate(bench: Bench, seconds: float, rate: int) -> dict:
    from webhook import certs

    served = bench.serve()
    try:
        before = _served_certificate(served.process.port)
        thread, result = served.under_load(bench.body, seconds, rate)
        time.sleep(seconds / 2)
        fresh = bench.work / "fresh"
        certs.generate(certs.CertPaths(fresh), ["localhost"], ["127.0.0.1"])  # a new CA as well
        for name in ("tls.key", "tls.crt"):
            os.replace(fresh / name, bench.tls / name)
        replaced = time.monotonic()
        expected = sha256(ssl.PEM_cert_to_DER_cert((bench.tls / "tls.crt").read_text())).hexdigest()
        switched, probes_failed = None, 0
        while switched is None and time.monotonic() - replaced < 10:
            try:
                if _served_certificate(served.process.port) == expected:
                    switched = time.monotonic() - replaced
            except (OSError, ssl.SSLError):
                # A new connection's handshake that failed during the reload (it met the live context between the
                # new certificate and its key, before the load moved onto the event loop): counted and shown.
                probes_failed += 1
            time.sleep(0.05)
        thread.join()
    finally:
        served.process.stop()
    load = result[0]
    return {"scenario": "certificate", "seconds": seconds, "rate": rate, "ok": load.ok, "failed": load.failed,
            "p99_ms": round(load.p99_ms, 2), "new_connections_get_new_certificate_after_s": switched and round(switched, 2),
            "probe_handshakes_failed": probes_failed,
            "passed": load.failed == 0 and switched is not None and before != expected}


def catalogue(bench: Bench, seconds: float, rate: int) -> dict:
    served = bench.serve("--reload-seconds", "0.2")
    target = next(bench.catalogue.glob("*.yaml"))
    good = target.read_bytes()
    try:
        thread, result = served.under_load(bench.body, seconds, rate)
        time.sleep(seconds / 3)
        target.write_text("kind: CatalogueEntry\nname: [unclosed\n")
        time.sleep(1)
        during = {"last_reload_success": served.metric("podpatterns_config_last_reload_success"),
                  "still_injects": _injects(served, bench.body)}
        time.sleep(seconds / 3 - 1)
        target.write_bytes(good)
        time.sleep(1)
        after = served.metric("podpatterns_config_last_reload_success")
        failed_reloads = served.metric('podpatterns_config_reloads_total{result="failure"}')
        thread.join()
    finally:
        served.process.stop()
    logged = f'"problems":["{target}:' in served.log()
    load = result[0]
    return {"scenario": "catalogue", "seconds": seconds, "rate": rate, "ok": load.ok, "failed": load.failed,
            "p99_ms": round(load.p99_ms, 2), "while_broken": during, "failed_reloads": failed_reloads,
            "last_reload_success_after_repair": after, "error_logged_with_file": logged,
            "passed": load.failed == 0 and during == {"last_reload_success": 0.0, "still_injects": True}
            and after == 1.0 and (failed_reloads or 0) >= 1 and logged}


def sigterm(bench: Bench, seconds: float, rate: int, drain: float = 2.0) -> dict:
    """Python clients (they must stop when readiness says so, which hey cannot) over keep-alive connections."""
    served = bench.serve("--drain-seconds", str(drain))
    body = bench.body.read_bytes()
    outcomes: list[tuple[float, int]] = []
    stop = threading.Event()
    pause = 4 / rate  # four clients together at about `rate`

    def client() -> None:
        with httpx.Client(verify=False, timeout=10) as http:  # noqa: S501 (a bench against itself)
            while not stop.is_set():
                try:
                    status = http.post(served.url, content=body, headers={"content-type": "application/json"}).status_code
                except httpx.HTTPError:
                    status = 0
                outcomes.append((time.monotonic(), status))
                time.sleep(pause)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(seconds / 2)
    signalled = time.monotonic()
    served.process.process.send_signal(signal.SIGTERM)
    not_ready = None
    while not_ready is None and time.monotonic() - signalled < 5:
        if httpx.get(f"{served.health}/readyz", timeout=5).status_code == 503:
            not_ready = time.monotonic() - signalled
        time.sleep(0.02)
    time.sleep(min(drain / 2, 1.0))  # the endpoints controller and kube-proxy catching up
    stop.set()
    for thread in clients:
        thread.join()
    code = served.process.process.wait(30)
    exited = time.monotonic() - signalled
    failed = sum(1 for _, status in outcomes if status != 200)
    return {"scenario": "sigterm", "drain_seconds": drain, "requests": len(outcomes), "failed": failed,
            "not_ready_after_s": not_ready and round(not_ready, 3), "exit_code": code, "exited_after_s": round(exited, 2),
            "passed": failed == 0 and code == 0 and not_ready is not None and not_ready < 0.5
            and drain <= exited < drain + 10}


def _served_certificate(port: int) -> str:
    return sha256(ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port), timeout=5))).hexdigest()


def _injects(served: Served, body: Path) -> bool:
    reply = httpx.post(served.url, content=body.read_bytes(), verify=False, timeout=5)  # noqa: S501
    return reply.status_code == 200 and "patch" in reply.json()["response"]


SCENARIOS = {"sustained": sustained, "certificate": certificate, "catalogue": catalogue, "sigterm": sigterm}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--seconds", type=float, default=600, help="length of the sustained run (default 600)")
    parser.add_argument("--fault-seconds", type=float, default=30, help="length of each fault run (default 30)")
    parser.add_argument("--rate", type=int, default=1000, help="requests per second (default 1000)")
    parser.add_argument("--quick", action="store_true", help="the CI run: 20 s sustained, 6 s per fault")
    args = parser.parse_args(argv)
    if shutil.which("hey") is None:
        print("bench.faults: needs `hey` (Debian: apt-get install hey)", file=sys.stderr)
        return 2
    if args.quick:
        args.seconds, args.fault_seconds = 20, 6
    chosen = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    work = Path(tempfile.mkdtemp(prefix="podpatterns-faults-"))
    passed = True
    try:
        for name in chosen:
            bench = Bench(work / name)
            seconds = args.seconds if name == "sustained" else args.fault_seconds
            report = SCENARIOS[name](bench, seconds, args.rate)
            print(json.dumps(report), flush=True)
            passed = passed and report["passed"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
