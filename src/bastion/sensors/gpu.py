"""GPU use per process: NVML where a GPU exists, recorded samples for tests.

A backend answers one question: which host pids use a GPU now, how much. The
resource sensor maps those pids to sessions. ``NvmlBackend`` uses nvidia-ml-py (the
``gpu`` extra); ``RecordedGpuBackend`` replays samples given to it, so the detector
path is tested on machines without a GPU. ``detect_gpu_backend`` returns None when
there is no GPU: that is not a telemetry gap, there is nothing to observe.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["GpuBackend", "GpuSample", "NvmlBackend", "RecordedGpuBackend", "detect_gpu_backend"]


@dataclass(frozen=True, slots=True)
class GpuSample:
    pid: int
    util_percent: float
    mem_bytes: int
    device: int = 0


class GpuBackend(Protocol):
    name: str

    def samples(self) -> list[GpuSample]: ...


class RecordedGpuBackend:
    """Replays samples: each call to ``samples`` returns the current set until
    ``set_samples`` changes it (recorded traces are fed step by step by the test)."""

    name = "recorded"

    def __init__(self, samples: Iterable[GpuSample] = ()) -> None:
        self._lock = threading.Lock()
        self._samples = list(samples)

    def set_samples(self, samples: Iterable[GpuSample]) -> None:
        with self._lock:
            self._samples = list(samples)

    def samples(self) -> list[GpuSample]:
        with self._lock:
            return list(self._samples)


class NvmlBackend:
    """Per-process GPU memory (running compute/graphics processes) and utilisation
    (``nvmlDeviceGetProcessUtilization`` over the last sample period)."""

    name = "nvml"

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py; imported here because it is an optional extra

        self._nvml: Any = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        self._handles: Sequence[Any] = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._last_ts = [0] * count

    def samples(self) -> list[GpuSample]:
        nvml = self._nvml
        out: dict[tuple[int, int], GpuSample] = {}
        for index, handle in enumerate(self._handles):
            mem: dict[int, int] = {}
            for getter in (nvml.nvmlDeviceGetComputeRunningProcesses,
                           nvml.nvmlDeviceGetGraphicsRunningProcesses):
                try:
                    for proc in getter(handle):
                        mem[proc.pid] = mem.get(proc.pid, 0) + int(proc.usedGpuMemory or 0)
                except nvml.NVMLError:
                    continue
            util: dict[int, float] = {}
            try:
                stats = nvml.nvmlDeviceGetProcessUtilization(handle, self._last_ts[index])
                for st in stats:
                    util[st.pid] = max(util.get(st.pid, 0.0), float(st.smUtil))
                    self._last_ts[index] = max(self._last_ts[index], int(st.timeStamp))
            except nvml.NVMLError:
                pass  # NOT_FOUND: no process used the GPU since the last sample
            for pid in set(mem) | set(util):
                out[(index, pid)] = GpuSample(pid, util.get(pid, 0.0), mem.get(pid, 0), index)
        return list(out.values())


def detect_gpu_backend() -> tuple[GpuBackend | None, str | None]:
    """(backend, gap): NVML if a GPU is present. No GPU device at all is not a gap
    (there is nothing to observe); a GPU that NVML cannot read is, and says why."""
    has_device = os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
    try:
        backend = NvmlBackend()
    except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, ...
        if has_device:
            return None, f"a GPU is present but NVML is unusable ({exc!r}): GPU use is unseen"
        return None, None
    if not backend._handles:
        return None, None
    return backend, None
