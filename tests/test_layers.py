"""The layering of webhook/ (README, "Layout"), checked with import-linter as CI runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def lint(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(LINT, cwd=where, capture_output=True, text=True, timeout=120)


def test_the_repository_keeps_every_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "webhook", tmp_path / "webhook", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("core/engine.py", "from webhook.server import metrics", "Layers"),
    ("core/pod.py", "import socket", "The core is pure"),
    ("core/patch.py", "from webhook import logs", "The core is pure"),
    ("core/keys.py", "import kubernetes.client", "The core is pure"),
    ("cluster/kubeclient.py", "from webhook.cli import commands", "Layers"),
    ("server/metrics.py", "from webhook.cli import offline", "Layers"),
    ("core/template.py", "from webhook.core import renders", "No import cycles"),
])
def test_a_forbidden_import_breaks_the_contract(copy: Path, module: str, line: str, contract: str):
    path = copy / "webhook" / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    result = lint(copy)
    assert result.returncode == 1, result.stdout
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
    importer = module.removesuffix(".py").split("/")[-1]
    assert f"webhook.{module.replace('/', '.').removesuffix('.py')}" in result.stdout or f".{importer} ->" in result.stdout
