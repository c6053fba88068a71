"""Put the three host-wide sensors on a ``Host`` (one set per host, shared by all
of its sessions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .files import FileSensor
from .gpu import GpuBackend
from .process import ProcessSensor
from .resources import ResourceSensor

if TYPE_CHECKING:
    from ..host import Host

__all__ = ["HostSensors", "install_sensors", "uninstall_sensors"]


@dataclass
class HostSensors:
    process: ProcessSensor
    resources: ResourceSensor
    files: FileSensor
    closed: bool = False

    @property
    def observers(self) -> tuple[ProcessSensor, ResourceSensor, FileSensor]:
        return (self.process, self.resources, self.files)

    def close(self) -> None:
        self.closed = True
        for sensor in self.observers:
            sensor.close()


def install_sensors(host: Host, *, process: dict[str, Any] | None = None,
                    gpu: GpuBackend | None = None, interval: float | None = None) -> HostSensors:
    """Create the sensors and register them as observers of ``host``.

    ``gpu`` replaces NVML detection (tests pass a ``RecordedGpuBackend``);
    ``process`` passes options to ``ProcessSensor`` (mode, rcvbuf, max_lag).
    """
    proc = ProcessSensor(**(process or {}))
    res = ResourceSensor(gpu=gpu, interval=interval) if gpu is not None else ResourceSensor(
        interval=interval)
    files = FileSensor()
    for observer in (proc, res, files):
        host.add_observer(observer)
    return HostSensors(proc, res, files)


def uninstall_sensors(host: Host) -> None:
    """Take the default sensors (``host.sensors``) off ``host``.

    For an unmonitored baseline in benchmarks, and for tests that put differently
    configured sensors on a host. Sessions registered later are not observed.
    """
    installed = host.sensors
    if installed is None:
        return
    for sensor in installed.observers:
        host.remove_observer(sensor)
    # not closed: the default sensors are shared by every Host of the process
    host.sensors = None
