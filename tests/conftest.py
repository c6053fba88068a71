"""Shared fixtures. Every test that makes sessions gets its own state directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion import Policy, Session


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Sandbox uids must be able to traverse to their workspace, which pytest's private
    # tmp directories (mode 0700) do not allow; /var/tmp does.
    path = Path(tempfile.mkdtemp(prefix="bastion-test-", dir="/var/tmp"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_session(state_dir: Path) -> Iterator[Callable[..., Session]]:
    sessions: list[Session] = []

    def make(policy: Policy | dict | None = None, **kwargs: object) -> Session:
        if isinstance(policy, dict):
            policy = Policy.from_dict(policy)
        kwargs.setdefault("state_dir", state_dir)
        s = Session(policy, **kwargs)  # type: ignore[arg-type]
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()


@pytest.fixture
def session(make_session: Callable[..., Session]) -> Session:
    return make_session()


def pid_alive(pid: int) -> bool:
    """True while the pid exists in any form, zombies included."""
    return os.path.exists(f"/proc/{pid}")
