"""Golden files: each `NAME.in.yaml` beside the `NAME.out.yaml` that `podpatterns inject` must print.

Regenerate after an intended change with `REGENERATE_GOLDEN=1 pytest tests/test_golden.py` and review the diff.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout

import pytest
import yaml

from tests.helpers import GOLDEN, assert_valid_pod
from webhook.cli import commands as cli
from webhook.cli import workloads

EXTRA_ARGS = {"regular-lifecycle": ["--kube-version", "1.28"],
              "air-gapped": ["--image-registry", "registry.internal/mirror", "--image-pull-secret", "internal-registry",
                             "--image-pull-secret", "fluent-bit-mirror"]}
CASES = sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml"))


def test_there_is_a_golden_case_for_each_builtin_and_for_all_three():
    assert {"log-shipper", "json-log-adapter", "db-ambassador", "all-three"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_inject_matches_golden_output(case):
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["inject", "-f", str(GOLDEN / f"{case}.in.yaml"), *EXTRA_ARGS.get(case, [])]) == 0
    expected_file = GOLDEN / f"{case}.out.yaml"
    if os.environ.get("REGENERATE_GOLDEN"):
        expected_file.write_text(out.getvalue())
    produced = list(yaml.safe_load_all(out.getvalue()))
    assert produced == list(yaml.safe_load_all(expected_file.read_text()))
    for doc in produced:
        target = workloads.find(doc, "default")
        if target is not None:
            assert_valid_pod({"metadata": {"name": "x"}, **target.pod} if target.kind != "Pod" else target.pod)
