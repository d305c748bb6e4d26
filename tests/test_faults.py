"""The fault scripts of bench/faults.py in their CI length: sustained load, certificate and catalogue
replaced mid-load, SIGTERM mid-load. Each must see 0 failed requests (the script judges, this checks its report)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.helpers import ROOT


def test_every_fault_scenario_in_its_quick_form_loses_no_request():
    assert shutil.which("hey"), "bench.faults needs hey: apt-get install hey (see README, Reliability)"
    done = subprocess.run([sys.executable, "-m", "bench.faults", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=400)
    reports = {report["scenario"]: report for report in map(json.loads, done.stdout.splitlines())}
    assert sorted(reports) == ["catalogue", "certificate", "sigterm", "sustained"], done.stdout + done.stderr
    sustained = reports["sustained"]
    assert sustained["seconds"] == 20 and sustained["ok"] > 20 * 500 and sustained["failed"] == 0
    assert sustained["rss_growth_pct"] <= 10
    assert reports["certificate"]["failed"] == 0 and reports["certificate"]["new_connections_get_new_certificate_after_s"] < 5
    catalogue = reports["catalogue"]
    assert catalogue["failed"] == 0 and catalogue["while_broken"] == {"last_reload_success": 0.0, "still_injects": True}
    assert catalogue["failed_reloads"] >= 1 and catalogue["error_logged_with_file"]
    sigterm = reports["sigterm"]
    assert sigterm["failed"] == 0 and sigterm["exit_code"] == 0 and sigterm["not_ready_after_s"] < 0.5
    assert all(report["passed"] for report in reports.values()) and done.returncode == 0, done.stdout
