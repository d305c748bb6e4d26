"""The README's commands stay true: CI runs exactly the README's test command."""

from tests.helpers import ROOT


def test_ci_runs_the_readme_test_command():
    command = "python3 -m pip install -e '.[test]' && python3 -m pytest"
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()
    assert f"\n{command}\n" in (ROOT / ".ci" / "run").read_text()
    assert "\npython3 -m pip install . && podpatterns serve\n" in (ROOT / "README.md").read_text()
