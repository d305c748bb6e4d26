"""`podpatterns serve --config FILE`: the settings file the Helm chart mounts, checked before serving."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import (
    Server,
    apply,
    assert_valid_pod,
    ops_of,
    podpatterns_command,
    review_with,
)


@pytest.mark.slow
def test_settings_from_the_file_are_used_and_the_command_line_wins(tmp_path):
    settings = tmp_path / "settings.yaml"
    # The file asks for port 1 and quiet; Server passes its own --port, which must win.
    settings.write_text("prefix: example.com\nmax-body-bytes: 40000\nport: 1\nquiet: true\nlog-level: warning\n")
    server = Server(tmp_path, "--config", str(settings))
    try:
        body = review_with({"example.com/inject": "log-shipper"})
        reply = server.mutate(body).json()
        assert reply["response"]["allowed"] is True
        pod = apply(body["request"]["object"], ops_of(reply["response"]))
        assert_valid_pod(pod)
        assert '"entry":"log-shipper"' in pod["metadata"]["annotations"]["example.com/status"].replace(" ", "")
        # The default prefix is no longer the one read.
        assert "patch" not in server.mutate(review_with({"podpatterns.io/inject": "log-shipper"})).json()["response"]
        assert server.mutate(b"x" * 50_000).status_code == 413
    finally:
        server.stop()
    assert "caBundle" not in server.output()  # quiet: true from the file


@pytest.mark.parametrize("text, error", [
    ("colour: red\n", "unknown setting 'colour'"),
    ("port: [1, 2]\n", "port must be a single value"),
    ("port: eighty\n", "port: not a valid value: 'eighty'"),
    ("log-level: loud\n", "log-level must be one of debug, info, warning, error"),
    ("quiet: yes please\n", "quiet must be true or false"),
    ("- port\n", "expected a mapping of settings, got list"),
    ("prefix: a\nport: [\n", ".yaml:3: not valid YAML"),
    ("namespace-lookup-timeout-seconds: 45\n",
     "namespace-lookup-timeout-seconds: must be more than 0 and less than 30 (the longest webhook timeout), got 45"),
    ("unsynced-namespaces: inject\n", "unsynced-namespaces must be one of fail, skip, got 'inject'"),
])
def test_a_broken_settings_file_is_refused_with_file_and_key(tmp_path, text, error):
    settings = tmp_path / "settings.yaml"
    settings.write_text(text)
    done = subprocess.run([*podpatterns_command(), "serve", "--config", str(settings)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"settings file {settings}" in done.stderr and error in done.stderr, done.stderr


def test_a_missing_settings_file_is_refused(tmp_path):
    done = subprocess.run([*podpatterns_command(), "serve", "--config", str(tmp_path / "nope.yaml")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "No such file or directory" in done.stderr
