"""A node daemon serving a test's state directory, in a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.daemon.server import NodeServer
from tests.conftest import wait_for


@pytest.fixture
def node(state_dir: Path) -> Iterator[NodeServer]:
    server = NodeServer(state_dir, max_sessions=8)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:  # noqa: BLE001 - shown by the fixture
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert wait_for(lambda: server.ready.is_set() or errors, timeout=60) and not errors, errors
    yield server
    server.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
