"""Images built once per test run (umoci/skopeo from local files), and a state
directory whose image cache the tests of a module share."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import builders

pytestmark = pytest.mark.skipif(not shutil.which("umoci") or not shutil.which("skopeo"),
                                reason="umoci and skopeo are needed (make bootstrap)")


@pytest.fixture(scope="session")
def image_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bastion-images-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_layout(image_dir: Path) -> Path:
    """An image without Python: busybox only, WORKDIR /opt."""
    rootfs = builders.busybox_rootfs(image_dir / "busybox-rootfs")
    (rootfs / "etc" / "motd").write_text("base layer\n")
    layer2 = image_dir / "busybox-layer2"
    (layer2 / "opt" / "data").mkdir(parents=True)
    (layer2 / "opt" / "data" / "f.txt").write_text("second layer\n")
    layout = builders.oci_layout(image_dir / "busybox", "v1", [rootfs, layer2],
                                 workdir="/opt", env=["GREETING=from-image"])
    builders.run("umoci", "insert", "--image", f"{layout}:v1", "--whiteout", "/etc/motd")
    return layout


@pytest.fixture(scope="session")
def swe_layout(image_dir: Path) -> Path:
    """A SWE-style task image: base layer (busybox, python3, git), task layer
    (/testbed git repo, /opt/venv with pip and pytest)."""
    base = builders.swe_rootfs(image_dir / "swe-base")
    task = image_dir / "swe-task"
    (task / "opt").mkdir(parents=True)
    shutil.move(base / "testbed", task / "testbed")
    shutil.move(base / "opt" / "venv", task / "opt" / "venv")
    (task / "wheels").mkdir()
    builders.make_wheel(task / "wheels")
    return builders.oci_layout(image_dir / "swe", "task1", [base, task], workdir="/testbed",
                               env=["PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"])


@pytest.fixture(scope="session")
def busybox_archive(image_dir: Path, busybox_layout: Path) -> Path:
    return builders.docker_archive(busybox_layout, "v1", image_dir / "busybox.tar")


@pytest.fixture(scope="module")
def image_state() -> Iterator[Path]:
    """A state directory kept for a whole module, so its image cache is shared."""
    path = Path(tempfile.mkdtemp(prefix="bastion-test-", dir="/var/tmp"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)
