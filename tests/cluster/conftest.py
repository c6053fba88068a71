"""One local Ray (2 CPUs) shared by every cluster test module: starting Ray costs
seconds on 2 cores, so the package pays it once."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="package")
def cluster_state():
    ray = pytest.importorskip("ray")
    from ..rl import fixtures
    from . import helpers

    path = Path(tempfile.mkdtemp(prefix="bastion-ray-", dir="/var/tmp"))
    os.chmod(path, 0o711)
    ray.cloudpickle.register_pickle_by_value(fixtures)
    ray.cloudpickle.register_pickle_by_value(helpers)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield path
    finally:
        ray.shutdown()
        shutil.rmtree(path, ignore_errors=True)
