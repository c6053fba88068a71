"""The red-team scorecard's fast suite, run once per test session against a private lab."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.redteam import RunConfig, Runner, Scorecard, load_builtin, select


@pytest.fixture(scope="session")
def fast_scorecard() -> Iterator[Scorecard]:
    # sandbox uids must traverse to their workspaces: /var/tmp, not pytest's 0700 tmp
    state = Path(tempfile.mkdtemp(prefix="bastion-redteam-", dir="/var/tmp"))
    os.chmod(state, 0o711)
    runner = Runner(RunConfig(state_dir=state, lab_name=f"bstrt{os.getpid() % 100000}",
                              run_id="redteam-test"))
    try:
        yield runner.run(select(load_builtin(), suite="fast"), suite="fast")
    finally:
        shutil.rmtree(state, ignore_errors=True)
