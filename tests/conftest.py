from __future__ import annotations

import pytest

from tests.helpers import Server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One `podpatterns serve` with its built-in defaults, shared by the HTTP tests."""
    running = Server(tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()
