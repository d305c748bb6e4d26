"""The hashed locks in requirements/ (what the Dockerfile and tests/run install) still satisfy pyproject.toml."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")
REGENERATE = "regenerate it with the pip-compile command at the top of the file (README, \"Reproducible builds\")"


def pins(lock: str) -> dict[str, Version]:
    text = (ROOT / "requirements" / lock).read_text()
    found = {canonicalize_name(m.group(1)): Version(m.group(2)) for m in map(PIN.match, text.splitlines()) if m}
    # Every pinned distribution carries its hashes, so `pip install --require-hashes` accepts the file.
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1] if "\n\n" in text else text)
    for block in blocks:
        if PIN.match(block):
            assert "--hash=sha256:" in block, f"{lock}: {block.splitlines()[0]} has no hash; {REGENERATE}"
    return found


def declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return [Requirement(r) for r in names]


@pytest.mark.parametrize(("lock", "extra"), [("runtime.txt", None), ("test.txt", "test")])
def test_every_declared_dependency_is_locked_within_its_range(lock: str, extra: str | None):
    locked = pins(lock)
    for requirement in declared(extra):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is in pyproject.toml but not in requirements/{lock}; {REGENERATE}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={locked[name]}, outside pyproject.toml's {requirement}; {REGENERATE}")


@pytest.mark.parametrize(("lock", "extra"), [("runtime.txt", None), ("test.txt", "test")])
def test_what_the_locked_packages_need_is_locked_too(lock: str, extra: str | None):
    """The closure, read from the installed metadata of each pinned version (tests/run installs the lock),
    with the extras pyproject.toml asks for (uvicorn[standard])."""
    locked = pins(lock)
    wanted_extras = {canonicalize_name(r.name): r.extras for r in declared(extra)}
    checked = 0
    for name, version in locked.items():
        try:
            if Version(metadata.version(name)) != version:
                continue
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        checked += 1
        for line in requires:
            requirement = Requirement(line)
            extras = wanted_extras.get(name, set()) | {""}
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
                continue
            needed = canonicalize_name(requirement.name)
            assert needed in locked, f"{name}=={version} needs {requirement}, which requirements/{lock} lacks; {REGENERATE}"
            assert requirement.specifier.contains(locked[needed], prereleases=True), (
                f"{name}=={version} needs {requirement}, requirements/{lock} pins {locked[needed]}; {REGENERATE}")
    assert checked >= len(locked) // 2, "the locked versions are not what is installed: run tests/run"


def test_a_lock_outside_the_range_is_reported(tmp_path, monkeypatch):
    """The check above can fail: a lock pinning fastapi below pyproject.toml's range is refused."""
    runtime = (ROOT / "requirements" / "runtime.txt").read_text()
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "runtime.txt").write_text(re.sub(r"(?m)^fastapi==\S+", "fastapi==0.100.0", runtime))
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="fastapi==0.100.0, outside"):
        test_every_declared_dependency_is_locked_within_its_range("runtime.txt", None)
