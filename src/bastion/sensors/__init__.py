"""Sensors turn what happens in sessions into Events (internal). They never decide.

Layering: ``netlink``/``inotify``/``procfs``/``gpu`` read the kernel (sans-I/O parsers
beside thin readers); ``process``/``resources``/``files`` are the host-wide observers
that attribute and emit; ``install`` wires all three onto a ``Host``.
"""

from __future__ import annotations

from .files import FileSensor as FileSensor
from .gpu import GpuSample as GpuSample
from .gpu import RecordedGpuBackend as RecordedGpuBackend
from .install import HostSensors as HostSensors
from .install import install_sensors as install_sensors
from .install import uninstall_sensors as uninstall_sensors
from .process import ProcessSensor as ProcessSensor
from .resources import ResourceSensor as ResourceSensor

__all__ = ["FileSensor", "GpuSample", "HostSensors", "ProcessSensor", "RecordedGpuBackend",
           "ResourceSensor", "install_sensors", "uninstall_sensors"]
