"""Stateful detectors: behaviour over time that no single event shows.

Each detector sees only the event kinds it names, keeps its state per session
(``forget`` drops it when the session ends) and fires once per offender, so a miner
reported four times a second yields one verdict, not a stream.

* ``CpuBurnDetector``: a process outside the task's expected workload that burns
  >= ``cpu_burn_cores`` (capped at the session's CPU limit) for >= ``cpu_burn_seconds``
  (resource samples, per process); CPU *demand* (run + run-queue wait) counts, so a
  burner on a host too busy to give it a core is still caught.
* ``GpuDetector``: a process outside the expected workload that uses the GPU.
* ``ForkStormDetector``: more than ``fork_storm_per_second`` forks in a session in 1 s.
* ``ConnectionDetector``: outbound connections open for >= ``long_connection_seconds``
  (net.flow / net.close) and periodic re-connections to one destination (beacons).
* ``TelemetryLossDetector``: a sensor lost events or runs degraded; loss freezes the
  session (fail closed: an agent must not blind bastion by flooding it).
"""

from __future__ import annotations

import fnmatch
import statistics
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..events import Action, Event, EventKind, Severity
from ..policy.rules import DetectorSettings
from ..sensors.burn import burn_threshold, is_burning
from .finding import Detector, Finding

__all__ = [
    "ConnectionDetector",
    "CpuBurnDetector",
    "ForkStormDetector",
    "GpuDetector",
    "TelemetryLossDetector",
    "default_detectors",
]


# Beacon detection (settings in the policy's rules.detectors): beacon_min_connections
# connections to one destination at intervals whose coefficient of variation is below
# beacon_max_jitter, at least beacon_min_period seconds apart.
_FORK_WINDOW_NS = 1_000_000_000
_FORK_COOLDOWN_NS = 5_000_000_000


class _Expected:
    """Names (globs) of processes that belong to the task's workload."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(patterns)
        self._cache: dict[tuple[str, str], bool] = {}

    def __contains__(self, event: object) -> bool:
        assert isinstance(event, Event)
        name = str(event.fields.get("proc.name") or "")
        exe = str(event.fields.get("proc.exe") or "")
        key = (name, exe)
        hit = self._cache.get(key)
        if hit is None:
            base = exe.rsplit("/", 1)[-1]
            hit = any(fnmatch.fnmatchcase(n, p) for p in self._patterns
                      for n in (name, base, exe) if n)
            if len(self._cache) < 4096:
                self._cache[key] = hit
        return hit


@dataclass
class _Burn:
    seconds: float = 0.0
    fired: bool = False
    event_ids: deque[str] = field(default_factory=lambda: deque(maxlen=16))


class CpuBurnDetector:
    name = "cpu_burn"
    kinds = frozenset({EventKind.RESOURCE, EventKind.EXIT})

    def __init__(self, settings: DetectorSettings, cap_cores: float | None = None) -> None:
        # a session limited to less CPU than the threshold could otherwise never trip it
        self._cores = burn_threshold(settings.cpu_burn_cores, cap_cores)
        self._seconds = settings.cpu_burn_seconds
        self._expected = _Expected(settings.expected_processes)
        self._state: dict[tuple[str, int], _Burn] = {}
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        pid = event.pid
        if pid is None:
            return []
        key = (event.session_id, pid)
        if event.kind is EventKind.EXIT:
            with self._lock:
                self._state.pop(key, None)
            return []
        cores = event.fields.get("res.cpu_cores")
        if cores is None or event.fields.get("res.scope") == "session":
            return []
        with self._lock:
            state = self._state.get(key)
            # demand (run + run-queue wait) when the sensor has it: on a busy host a
            # burner gets less than a core but still wants one, and must not escape
            demand = event.fields.get("res.cpu_demand")
            if not is_burning(cores, demand, self._cores):
                if state is not None and not state.fired:
                    del self._state[key]
                return []
            if event in self._expected:
                return []
            if state is None:
                state = self._state[key] = _Burn()
            if state.fired:
                return []
            state.seconds += float(event.fields.get("res.interval") or 0.0)
            state.event_ids.append(event.id)
            if state.seconds + 1e-9 < self._seconds:
                return []
            state.fired = True
            ids = tuple(state.event_ids)
            burned = state.seconds
        name = event.fields.get("proc.name") or "?"
        return [Finding(
            rule_id="detector.cpu_burn",
            severity=Severity.HIGH,
            message=(f"process {name} (pid {pid}) burned {max(cores, demand or 0.0):.2f} cores "
                     f"for {burned:.2f}s and is not part of the expected workload"),
            categories=("mining", "resource_abuse"),
            mitre=("T1496",),
            evidence={"res.cpu_cores": cores, "res.cpu_demand": demand,
                      "res.burn_seconds": round(burned, 3),
                      "proc.name": name, "proc.cmdline": event.fields.get("proc.cmdline", "")},
            event_ids=ids,
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._state if k[0] == session_id]:
                del self._state[key]


class GpuDetector:
    name = "gpu_unexpected"
    kinds = frozenset({EventKind.RESOURCE})

    def __init__(self, settings: DetectorSettings) -> None:
        self._util = settings.gpu_util_percent
        self._expected = _Expected(settings.expected_processes)
        self._fired: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        util = event.fields.get("res.gpu_util")
        if util is None or event.pid is None:
            return []
        mem = int(event.fields.get("res.gpu_mem_bytes") or 0)
        if util < self._util and not (self._util == 0 and mem > 0):
            return []
        if event in self._expected:
            return []
        key = (event.session_id, event.pid)
        with self._lock:
            if key in self._fired:
                return []
            self._fired.add(key)
        name = event.fields.get("proc.name") or "?"
        return [Finding(
            rule_id="detector.gpu_unexpected",
            severity=Severity.HIGH,
            message=(f"process {name} (pid {event.pid}) uses the GPU ({util:.0f}% utilisation, "
                     f"{mem} bytes) and is not part of the expected workload"),
            categories=("mining", "resource_abuse"),
            mitre=("T1496",),
            evidence={"res.gpu_util": util, "res.gpu_mem_bytes": mem, "proc.name": name},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._fired = {k for k in self._fired if k[0] != session_id}


class ForkStormDetector:
    name = "fork_storm"
    kinds = frozenset({EventKind.FORK})

    def __init__(self, settings: DetectorSettings) -> None:
        self._limit = settings.fork_storm_per_second
        self._windows: dict[str, deque[int]] = {}
        self._last_fired: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        now = event.ts
        with self._lock:
            window = self._windows.get(event.session_id)
            if window is None:
                window = self._windows[event.session_id] = deque()
            window.append(now)
            while window and now - window[0] > _FORK_WINDOW_NS:
                window.popleft()
            count = len(window)
            if count <= self._limit:
                return []
            last = self._last_fired.get(event.session_id)
            if last is not None and now - last < _FORK_COOLDOWN_NS:
                return []
            self._last_fired[event.session_id] = now
        return [Finding(
            rule_id="detector.fork_storm",
            severity=Severity.HIGH,
            message=f"{count} processes forked within one second (limit {self._limit})",
            categories=("resource_abuse", "defense_evasion"),
            mitre=("T1499",),
            evidence={"forks_per_second": count},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._windows.pop(session_id, None)
            self._last_fired.pop(session_id, None)


class ConnectionDetector:
    name = "connections"
    kinds = frozenset({EventKind.NET_FLOW, EventKind.NET_CLOSE, EventKind.NET_CONNECT})

    def __init__(self, settings: DetectorSettings) -> None:
        self._long = settings.long_connection_seconds
        self._beacon_n = settings.beacon_min_connections
        self._beacon_cv = settings.beacon_max_jitter
        self._beacon_period = settings.beacon_min_period
        self._long_fired: set[tuple[str, str]] = set()
        self._connects: dict[tuple[str, str, int], deque[int]] = {}
        self._beacon_fired: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        if event.kind is EventKind.NET_CONNECT:
            return self._beacon(event)
        duration = event.fields.get("net.duration")
        if duration is None or float(duration) < self._long:
            return []
        conn = str(event.fields.get("net.conn_id") or f"{event.pid}")
        with self._lock:
            if (event.session_id, conn) in self._long_fired:
                return []
            self._long_fired.add((event.session_id, conn))
        dst = f"{event.fields.get('net.dst_ip')}:{event.fields.get('net.dst_port')}"
        return [Finding(
            rule_id="detector.long_connection",
            severity=Severity.MEDIUM,
            message=f"outbound connection to {dst} open for {float(duration):.0f}s",
            categories=("tunnel", "command_and_control"),
            mitre=("T1572",),
            evidence={"net.duration": duration, "net.conn_id": conn, "destination": dst},
        )]

    def _beacon(self, event: Event) -> list[Finding]:
        if event.fields.get("net.decision") == "deny":
            return []
        ip = str(event.fields.get("net.dst_ip") or "")
        port = int(event.fields.get("net.dst_port") or 0)
        key = (event.session_id, ip, port)
        with self._lock:
            if key in self._beacon_fired:
                return []
            times = self._connects.get(key)
            if times is None:
                times = self._connects[key] = deque(maxlen=self._beacon_n)
            times.append(event.ts)
            if len(times) < self._beacon_n:
                return []
            gaps = [(b - a) / 1e9 for a, b in zip(times, list(times)[1:])]
            mean = statistics.fmean(gaps)
            if mean < self._beacon_period or statistics.pstdev(gaps) / mean > self._beacon_cv:
                return []
            self._beacon_fired.add(key)
        return [Finding(
            rule_id="detector.beacon",
            severity=Severity.MEDIUM,
            message=(f"periodic connections to {ip}:{port}: {len(gaps) + 1} connections "
                     f"every {mean:.1f}s"),
            categories=("command_and_control",),
            mitre=("T1071", "T1029"),
            evidence={"destination": f"{ip}:{port}", "period_seconds": round(mean, 3)},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._long_fired = {k for k in self._long_fired if k[0] != session_id}
            self._beacon_fired = {k for k in self._beacon_fired if k[0] != session_id}
            for key in [k for k in self._connects if k[0] == session_id]:
                del self._connects[key]


class TelemetryLossDetector:
    """Always on: losing events means bastion is blind, so the session is frozen."""

    name = "telemetry"
    kinds = frozenset({EventKind.TELEMETRY})

    def observe(self, event: Event) -> list[Finding]:
        sensor = event.fields.get("telemetry.sensor", "?")
        reason = event.fields.get("telemetry.reason", "")
        if event.fields.get("telemetry.loss"):
            return [Finding(
                rule_id="telemetry.loss",
                severity=Severity.CRITICAL,
                message=f"the {sensor} sensor lost events ({reason}); session frozen",
                categories=("monitor_tamper",),
                mitre=("T1562",),
                action=Action.FREEZE,
                evidence={"sensor": sensor, "reason": reason},
            )]
        if event.fields.get("telemetry.gap"):
            return [Finding(
                rule_id="telemetry.degraded",
                severity=Severity.MEDIUM,
                message=f"the {sensor} sensor runs degraded ({reason})",
                categories=("monitor_tamper",),
                evidence={"sensor": sensor, "reason": reason},
            )]
        return []

    def forget(self, session_id: str) -> None:
        return None


def default_detectors(settings: DetectorSettings, *,
                      cap_cores: float | None = None) -> list[Detector]:
    """The detectors every engine runs, in evaluation order. ``cap_cores`` is the
    session's CPU limit (policy ``sandbox.limits.cpus``)."""
    return [
        TelemetryLossDetector(),
        CpuBurnDetector(settings, cap_cores),
        GpuDetector(settings),
        ForkStormDetector(settings),
        ConnectionDetector(settings),
    ]
