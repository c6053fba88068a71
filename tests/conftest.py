"""Shared fixtures. Every test that makes sessions gets its own state directory.

Tests that need root (namespaces, cgroups, bubblewrap, nftables) are marked
``needs_root`` (module-level ``pytestmark`` or per test) and are skipped, not failed,
when the suite runs unprivileged. Tests wait for a condition with ``wait_for``, never
with a bare sleep.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from bastion import Policy, Session

T = TypeVar("T")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, step: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout``
    passes (its last value is returned, for the assertion to show).

    The default timeout is generous on purpose: a condition that holds returns at once
    on a fast machine, and a loaded or slow one (CI, or seven helpers on two cores) gets
    time to reach it. A test that asserts something does *not* happen passes its own
    short ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


# A test that makes sessions (through these fixtures) needs root whether it says so
# or not: it is marked here, so `-m "not needs_root"` selects the pure tests.
_ROOT_FIXTURES = frozenset({"state_dir", "make_session", "session", "lab"})


_FAILED_LIST = "BASTION_FAILED_TESTS"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With ``BASTION_FAILED_TESTS=<file>`` set (CI's ``.ci/run``), the node id of every
    test that failed (in its setup, call or teardown) is appended to that file, one a
    line, as it fails: the CI script retries exactly those once and names them in its
    log. A list written as the run goes survives a run killed part-way."""
    path = os.environ.get(_FAILED_LIST)
    if path and report.failed:
        with open(path, "a") as f:
            f.write(report.nodeid + "\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Beside that list, ``<file>.status`` gets the run's exit status once it ended by
    itself: a run killed part-way (out of memory, a hard timeout) writes none, so its
    failures are not retried into a pass for a suite that never ran to its end."""
    path = os.environ.get(_FAILED_LIST)
    if path:
        with open(path + ".status", "w") as f:
            f.write(f"{int(exitstatus)}\n")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _ROOT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_root)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (namespaces, cgroups, bubblewrap)")
    for item in items:
        if "needs_root" in item.keywords:
            item.add_marker(skip)


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
