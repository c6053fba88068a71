from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bastion import Session
from bastion.sensors import HostSensors, RecordedGpuBackend, install_sensors

from .monitor import bare_host, monitored_session


@pytest.fixture
def gpu() -> RecordedGpuBackend:
    return RecordedGpuBackend()


@pytest.fixture
def sensors(state_dir: Path, gpu: RecordedGpuBackend) -> Iterator[HostSensors]:
    installed = install_sensors(bare_host(state_dir), gpu=gpu)
    yield installed
    installed.close()


@pytest.fixture
def monitored(state_dir: Path, sensors: HostSensors) -> Iterator[Callable[..., Session]]:
    made: list[Session] = []

    def make(policy: object = None, **kwargs: object) -> Session:
        s = monitored_session(state_dir, policy, **kwargs)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
