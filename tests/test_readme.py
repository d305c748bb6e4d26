"""The README's commands stay true: CI runs exactly the README's test command."""

from tests.helpers import ROOT


def test_ci_runs_the_readme_test_command():
    command = "bash tests/run"
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()
    assert f"\n{command}\n" in (ROOT / ".ci" / "run").read_text()
    # tests/run installs what the suite needs and runs pytest with the locked dependencies.
    script = (ROOT / "tests" / "run").read_text()
    assert "--require-hashes -r requirements/test.txt" in script and "exec python3 -m pytest" in script
    assert "\npython3 -m pip install . && podpatterns serve\n" in (ROOT / "README.md").read_text()


def test_the_readme_policy_example_is_valid_and_explain_prints_what_it_shows(tmp_path, capsys):
    from webhook.cli import commands as cli

    text = (ROOT / "README.md").read_text().split("### The policy file", 1)[1]
    policy = tmp_path / "policy.yaml"
    policy.write_text(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert cli.main(["policy", "validate", str(policy)]) == 0
    shown = text.split("$ podpatterns explain -f tests/policy/prod-namespace-and-deploy.yaml --policy policy.yaml\n", 1)[1]
    shown = shown.split("```", 1)[0]
    capsys.readouterr()
    assert cli.main(["explain", "-f", str(ROOT / "tests/policy/prod-namespace-and-deploy.yaml"), "--policy", str(policy)]) == 0
    assert capsys.readouterr().out == shown
