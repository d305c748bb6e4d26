"""The benchmark harness cannot rot: its quick run produces every figure (speed is judged in bench/, not here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.helpers import ROOT


def test_quick_bench_run_produces_figures():
    assert shutil.which("hey"), "the benchmark needs hey: apt-get install hey (see README, Performance)"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for server in ("floor", "podpatterns"):
        row = re.search(rf"^\| {server} \| (\d+) \| ([\d.]+) \| ([\d.]+) \| 0 \| ([\d.]+) \|$", out, re.M)
        assert row and float(row.group(1)) > 0, f"no throughput row for {server}:\n{out}"
    for server in ("floor", "podpatterns"):
        assert re.search(rf"^\| {server} \| 5KB-all-three \| 1000/s \| \d+ \| [\d.]+ \| [\d.]+ \| 0 \|$", out, re.M), out
    for name in ("pod-create-annotated", "pod-update-ephemeralcontainers", "5KB-one"):
        assert re.search(rf"^\| {name} \| \d+ \| \d+ \| [\d.]+ \| 0 \|$", out, re.M), out
    assert re.search(r"^- after 1000 requests: [\d.]+ MiB; after 2000: [\d.]+ MiB; growth [-+][\d.]+ %$", out, re.M)
    assert re.search(r"^\| 5KB-all-three \| [\d.]+ \| 1.00 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ \| 3 \|$",
                     out, re.M), out
    assert re.search(r"^- throughput ≥ 0.5 × floor: [\d.]+ — (met|MISSED)$", out, re.M), out
    assert re.search(r"^- p99 at 1000 req/s ≤ 1.5 × the floor's, 5KB \(× floor\): [\d.]+ — (met|MISSED)$", out, re.M), out
