"""The resource sensor: CPU, memory, pids and GPU use of every session, sampled.

Every ``interval`` (policy ``rules.detectors.sample_interval``, 250 ms by default)
each session gets one ``resource.sample`` event for the whole session (cgroup
``cpu.stat``, memory, pids) and one per process for its top CPU consumers, from
/proc/PID/stat, attributed to the process's call by the call cgroup it sits in.
GPU use per process comes from a ``GpuBackend`` (NVML, or recorded samples in tests).

The first sample of a process covers its whole life so far (CPU since its start
time), so a miner is measured from its first instant, not from the first tick
after it appeared: that is what keeps burn detection within ~2 s.

Besides CPU *use*, each process sample carries CPU *demand* (``res.cpu_demand``:
scheduler run time plus run-queue wait, from schedstat): on a busy host a miner gets
less than a core but still wants one, and the burn detector judges the demand.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InternalError
from ..events import Event, EventKind
from .burn import burn_threshold, is_burning
from .gpu import GpuBackend, GpuSample, detect_gpu_backend
from .procfs import process_name, read_sched_ns, read_stat

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["ResourceSensor"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_TOP_PROCESSES = 8
_MIN_REPORTED_CORES = 0.05


def _boot_monotonic() -> float:
    """Seconds of CLOCK_MONOTONIC at boot offset: /proc starttime is in ticks since
    boot (CLOCK_BOOTTIME), so convert through the boottime clock."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()


@dataclass
class _ProcState:
    start: int  # starttime ticks: tells a recycled pid apart
    cpu: float
    at: float
    sched_ns: int | None = None  # run + run-queue wait, when it was read
    burn: float = 0.0  # seconds burning without a break (res.burn_seconds)


@dataclass
class _SessionState:
    session: Session
    interval: float
    next_due: float
    burn_cores: float = 1.0
    cpu_usec: int | None = None
    at: float = 0.0
    procs: dict[int, _ProcState] | None = None


class ResourceSensor:
    """Host-wide observer sampling all sessions from one thread."""

    def __init__(self, *, gpu: GpuBackend | None | Callable[[], Any] = detect_gpu_backend,
                 interval: float | None = None) -> None:
        if callable(gpu) and not hasattr(gpu, "samples"):
            self._gpu, self.gpu_gap = gpu()
        else:
            self._gpu, self.gpu_gap = gpu, None  # type: ignore[assignment]
        self._interval_override = interval
        self._lock = threading.Lock()
        self._sampling = threading.Lock()  # held while a sample is being ingested
        self._sessions: dict[str, _SessionState] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._broken: str | None = None
        self.samples = 0
        self._thread = threading.Thread(target=self._guard, name="bastion-resources",
                                        daemon=True)
        self._thread.start()

    # -- observer protocol --------------------------------------------------------------

    def register(self, session: Session) -> None:
        if self._broken:
            raise InternalError(f"the resource sensor has failed: {self._broken}")
        settings = session.policy.rules.detectors
        interval = self._interval_override or settings.sample_interval
        threshold = burn_threshold(settings.cpu_burn_cores, session.policy.sandbox.limits.cpus)
        with self._lock:
            self._sessions[session.session_id] = _SessionState(
                session, interval, time.monotonic(), threshold, procs={})
        self._wake.set()
        if self.gpu_gap:
            session.ingest(session.event(EventKind.TELEMETRY, **{
                "telemetry.sensor": "gpu", "telemetry.reason": self.gpu_gap,
                "telemetry.gap": True}))

    def unregister(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)
        with self._sampling:
            pass  # a sample in flight finishes before the session is let go
    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)

    # -- sampling -----------------------------------------------------------------------

    def _guard(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self._broken = f"{type(exc).__name__}: {exc}"
            with self._lock:
                states = list(self._sessions.values())
            for state in states:
                with contextlib.suppress(Exception):
                    state.session.terminate(f"the resource sensor failed ({self._broken})")
            if not isinstance(exc, Exception):
                raise

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [s for s in self._sessions.values() if s.next_due <= now]
                upcoming = min((s.next_due for s in self._sessions.values()), default=now + 1)
            if due:
                gpu = self._gpu_samples()
                for state in due:
                    state.next_due = max(state.next_due + state.interval, now)
                    with self._sampling:
                        if state.session.session_id in self._sessions:
                            self.sample(state, gpu)
                continue
            self._wake.wait(max(0.0, upcoming - time.monotonic()))
            self._wake.clear()

    def _gpu_samples(self) -> dict[int, GpuSample]:
        if self._gpu is None:
            return {}
        return {s.pid: s for s in self._gpu.samples()}

    def sample(self, state: _SessionState, gpu: dict[int, GpuSample]) -> None:
        session = state.session
        cgroup = session.sandbox.cgroup if session.sandbox is not None else None
        if cgroup is None or session.closed or session.ended:
            return
        now = time.monotonic()
        boot = _boot_monotonic()
        events: list[Event] = []
        usage = cgroup.cpu_usage_usec()
        fields: dict[str, Any] = {"res.scope": "session", "res.mem_bytes": cgroup.memory_bytes(),
                                  "res.pids": cgroup.pids_current()}
        if usage is not None and state.cpu_usec is not None and now > state.at:
            fields["res.cpu_cores"] = round((usage - state.cpu_usec) / 1e6 / (now - state.at), 4)
            fields["res.interval"] = round(now - state.at, 4)
        state.cpu_usec, state.at = usage, now
        events.append(session.event(EventKind.RESOURCE, **fields))

        assert state.procs is not None
        seen: dict[int, _ProcState] = {}
        rows: list[tuple[float, int, str, str, Path, _ProcState]] = []
        for path in _call_dirs(cgroup.unified):
            for pid in _procs(path):
                stat = read_stat(pid)
                if stat is None:
                    continue
                prev = state.procs.get(pid)
                if prev is None or prev.start != stat.start:
                    since = boot + stat.start / _CLK_TCK  # its start, on the monotonic clock
                    prev = _ProcState(stat.start, 0.0, min(since, now - 1e-3), 0)
                span = now - prev.at
                cores = (stat.cpu - prev.cpu) / span if span > 0 else 0.0
                seen[pid] = _ProcState(stat.start, stat.cpu, now)
                if cores >= _MIN_REPORTED_CORES or stat.state == "R" or pid in gpu:
                    rows.append((cores, pid, stat.comm, stat.state, path, prev))
        state.procs = seen
        rows.sort(key=lambda r: r[0], reverse=True)
        reported = rows[:_TOP_PROCESSES]
        reported += [r for r in rows[_TOP_PROCESSES:] if r[1] in gpu]
        for cores, pid, comm, state_code, path, prev in reported:
            span = now - prev.at
            sched = read_sched_ns(pid)
            seen[pid].sched_ns = sched
            pfields: dict[str, Any] = {
                "res.scope": "process", "res.cpu_cores": round(cores, 4),
                "res.interval": round(span, 4), "proc.comm": comm, "proc.state": state_code}
            demand = None
            if sched is not None and prev.sched_ns is not None and span > 0:
                demand = pfields["res.cpu_demand"] = round((sched - prev.sched_ns) / 1e9 / span, 4)
            if is_burning(cores, demand, state.burn_cores):
                seen[pid].burn = prev.burn + span
            pfields["res.burn_seconds"] = round(seen[pid].burn, 3)
            call = session.call_for_cgroup(str(path))
            exe = _readlink(f"/proc/{pid}/exe") or ""
            args = _args(pid)
            pfields.update({"proc.name": process_name(comm, exe, args), "proc.exe": exe,
                            "proc.cmdline": " ".join(args)})
            g = gpu.get(pid)
            if g is not None:
                pfields["res.gpu_util"] = g.util_percent
                pfields["res.gpu_mem_bytes"] = g.mem_bytes
            events.append(session.event(EventKind.RESOURCE, call=call, pid=pid, **pfields))
        self.samples += 1
        for event in events:
            if session.ended or session.closed:
                break
            try:
                session.ingest(event)
            except Exception:  # noqa: BLE001 - ingest terminated that session already
                break


def _readlink(path: str) -> str | None:
    try:
        link = os.readlink(path)
    except OSError:
        return None
    return link.removesuffix(" (deleted)")


def _args(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(65536)
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def _call_dirs(unified: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [p for p in unified.iterdir() if p.is_dir()]
    return []


def _procs(path: Path) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    return []
