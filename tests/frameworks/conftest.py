"""Fixtures for the framework adapters: a state directory shared by a module's
sessions, and a small real task image (busybox, built with umoci from local files)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.image.sample import busybox_rootfs, oci_layout


def _tmp(prefix: str) -> Path:
    # sandbox uids must traverse to their workspace: /var/tmp, mode 0711 (see tests/conftest)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(path, 0o711)
    return path


@pytest.fixture(scope="module")
def module_state() -> Iterator[Path]:
    path = _tmp("bastion-fw-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def task_image() -> Iterator[Path]:
    """busybox only, WORKDIR /srv/task, /usr/bin/env: a minimal task image."""
    if not shutil.which("umoci"):
        pytest.skip("umoci is needed (make bootstrap)")
    base = _tmp("bastion-fw-image-")
    rootfs = busybox_rootfs(base / "rootfs")
    (rootfs / "srv" / "task").mkdir(parents=True)
    os.symlink("/bin/busybox", rootfs / "usr" / "bin" / "env")
    yield oci_layout(base / "layout", "v1", [rootfs], workdir="/srv/task",
                     env=["PATH=/usr/bin:/bin"])
    shutil.rmtree(base, ignore_errors=True)
