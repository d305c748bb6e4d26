"""Hostile input against the live server: `python3 -m bench.fuzz [--count 100000] [--seed N]`.

Starts `podpatterns serve` over TLS as bench/run.py does (pinned to CPU 0, production settings),
posts `--count` inputs from bench/hostile.py over keep-alive connections from `--clients` threads
(on CPU 1), and prints the counts of each HTTP status, of each AdmissionReview outcome and of each
problem. A problem is an HTTP 5xx, a timeout (no answer within 10 s), a connection error, an answer
that is not a well-formed AdmissionReview (right apiVersion/kind, the request's uid, `allowed` a
boolean) or JSON error (`{"error", "code"}` with the HTTP status), an internal-error denial (code 500
inside the review), an error line in the server's log, or a server that is not alive and answering
/healthz at the end. Exit status 1 when there was any, or when `--max-seconds` stopped the run early.

Input number I of seed N is `bench.hostile.case_at(N, I)`; `--show I` prints it without a server.
"""

from __future__ import annotations

import argparse
import itertools
import os
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson

from bench import hostile
from bench.run import Process, start

API_VERSION = "admission.k8s.io/v1"
PROBLEMS = ("5xx", "timeout", "connection error", "malformed answer", "internal-error denial")


def classify(item: hostile.Case, status: int, content_type: str, body: bytes) -> tuple[str | None, str | None]:
    """(AdmissionReview outcome or None, problem or None) of one answer."""
    if status >= 500:
        return None, "5xx"
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "malformed answer"
    if content_type != "application/json" or not isinstance(doc, dict):
        return None, "malformed answer"
    if 400 <= status < 500:
        ok = isinstance(doc.get("error"), str) and doc.get("code") == status
        return None, None if ok else "malformed answer"
    if status != 200:
        return None, "malformed answer"
    response = doc.get("response")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview" or not isinstance(response, dict):
        return None, "malformed answer"
    if response.get("uid") != orjson.loads(item.body)["request"]["uid"] or type(response.get("allowed")) is not bool:
        return None, "malformed answer"
    if response["allowed"]:
        return ("allowed, patched" if "patch" in response else "allowed, unchanged"), None
    code = (response.get("status") or {}).get("code")
    if code == 500:
        return "denied, code 500", "internal-error denial"
    return f"denied, code {code}", None


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.kinds: Counter[tuple[str, str]] = Counter()
        self.problems: Counter[str] = Counter()
        self.examples: list[str] = []

    def add(self, index: int, item: hostile.Case, status: str, outcome: str | None, problem: str | None,
            detail: str = "") -> None:
        with self.lock:
            self.statuses[status] += 1
            self.kinds[item.kind, status] += 1
            if outcome:
                self.outcomes[outcome] += 1
            if problem:
                self.problems[problem] += 1
                if len(self.examples) < 10:
                    self.examples.append(f"input {index} ({item.kind}): {problem} {detail}".rstrip())


def client_loop(url: str, ca: Path, seed: int, count: int, indexes: itertools.count, deadline: float,
                tally: Tally) -> None:
    context = ssl.create_default_context(cafile=ca)
    with httpx.Client(verify=context, timeout=10) as client:
        while time.monotonic() < deadline:
            index = next(indexes)
            if index >= count:
                return
            item = hostile.case_at(seed, index)
            try:
                reply = client.post(url, content=item.body, headers=item.headers)
            except httpx.TimeoutException as err:
                tally.add(index, item, "timeout", None, "timeout", type(err).__name__)
                continue
            except httpx.TransportError as err:
                tally.add(index, item, "connection error", None, "connection error", repr(err)[:200])
                continue
            outcome, problem = classify(item, reply.status_code, reply.headers.get("content-type", ""), reply.content)
            status = str(reply.status_code) + (" (not valid HTTP)" if not item.valid_http else "")
            tally.add(index, item, status, outcome, problem,
                      f"HTTP {reply.status_code}: {reply.content[:200]!r}" if problem else "")


def drain(stream, lines: list[str]) -> None:
    """Reads the server's log (it would block on a full pipe otherwise) and keeps its error lines."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if '"level":"error"' in line or "Traceback" in line or line.startswith("ERROR"):
            lines.append(line)


def alive(server: Process, ca: Path) -> bool:
    if server.process.poll() is not None:
        return False
    try:
        reply = httpx.get(f"https://127.0.0.1:{server.port}/healthz", verify=ssl.create_default_context(cafile=ca),
                          timeout=10)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and reply.json() == {"status": "ok"}


def table(title: str, rows: dict[str, int]) -> None:
    print(f"## {title}")
    print()
    print("| value | count |")
    print("|---|---|")
    for key, value in sorted(rows.items()):
        print(f"| {key} | {value} |")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="inputs to send (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="input I is bench.hostile.case_at(SEED, I)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive connections (default 8)")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop sending after this long (default 1800)")
    parser.add_argument("--show", type=int, metavar="I", help="print input I of --seed and exit")
    args = parser.parse_args(argv)
    if args.show is not None:
        item = hostile.case_at(args.seed, args.show)
        print(hostile.describe(item, limit=4000))
        return 0

    from webhook import certs

    work = Path(tempfile.mkdtemp(prefix="podpatterns-fuzz-"))
    paths = certs.CertPaths(work)
    certs.generate(paths, ["localhost"], ["127.0.0.1"])  # ECDSA P-256, as in production
    ca = paths.ca_cert
    server = start("podpatterns", work)
    errors: list[str] = []
    reader = threading.Thread(target=drain, args=(server.process.stderr, errors), daemon=True)
    reader.start()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the server has CPU 0 (bench.run.pinned)
    tally = Tally()
    indexes = itertools.count()
    started = time.monotonic()
    deadline = started + args.max_seconds
    try:
        threads = [threading.Thread(target=client_loop, args=(server.url, ca, args.seed, args.count, indexes, deadline,
                                                                tally)) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        shown = time.monotonic()
        for thread in threads:
            while thread.is_alive():
                thread.join(1)
                if time.monotonic() - shown >= 10:  # progress, on stderr
                    print(f"sent {sum(tally.statuses.values())} of {args.count}", file=sys.stderr, flush=True)
                    shown = time.monotonic()
        duration = time.monotonic() - started
        survived = alive(server, ca)
        rss = server.rss_mib() if server.process.poll() is None else float("nan")
    finally:
        server.stop()
    reader.join(5)

    sent = sum(tally.statuses.values())
    print(f"# /mutate fuzzing: {sent} of {args.count} inputs, seed {args.seed}, {args.clients} clients")
    print()
    print(f"- duration {duration:.1f} s, {sent / duration:.0f} req/s; server RSS at the end {rss:.1f} MiB")
    print()
    table("HTTP status", dict(tally.statuses))
    table("AdmissionReview outcome (HTTP 200)", dict(tally.outcomes))
    kinds = sorted({kind for kind, _ in tally.kinds})
    statuses = sorted(tally.statuses)
    print("## By generator")
    print()
    print("| generator | " + " | ".join(statuses) + " |")
    print("|---|" + "---|" * len(statuses))
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(str(tally.kinds[kind, s]) for s in statuses) + " |")
    print()
    print("## Problems")
    print()
    for problem in PROBLEMS:
        print(f"- {problem}: {tally.problems[problem]}")
    print(f"- error lines in the server's log: {len(errors)}")
    print(f"- server alive and answering /healthz at the end: {'yes' if survived else 'NO'}")
    for example in tally.examples:
        print(f"  - {example} (python3 -m bench.fuzz --seed {args.seed} --show INPUT)")
    for line in errors[:5]:
        print(f"  - log: {line[:500]}")
    complete = sent == args.count
    if not complete:
        print(f"- stopped by --max-seconds after {sent} of {args.count} inputs")
    ok = complete and survived and not errors and not sum(tally.problems.values())
    print()
    print("result: " + ("no problems" if ok else "PROBLEMS"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
