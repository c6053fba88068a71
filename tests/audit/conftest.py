from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def audit_state() -> Iterator[Path]:
    """A state directory for tests that do not start sandboxes."""
    path = Path(tempfile.mkdtemp(prefix="bastion-audit-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def visible_root() -> Iterator[Path]:
    """A directory under /var/lib, which sandboxes see (read-only) unless bastion masks
    it: the place to prove that the state directory is masked."""
    path = Path(tempfile.mkdtemp(prefix="bastion-audit-test-", dir="/var/lib"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
