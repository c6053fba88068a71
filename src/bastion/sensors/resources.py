"""The resource sensor: CPU, memory, pids and GPU use of every session, sampled.

Every ``interval`` (policy ``rules.detectors.sample_interval``, 250 ms by default)
each session gets

* one ``resource.sample`` for the whole session (cgroup ``cpu.stat``, memory, pids);
* one per call that used CPU (``res.scope = call``): the core-seconds its call cgroup
  used (``cpu.stat`` ``usage_usec``, exited processes included) and the part of them
  used by *background* processes, those that outlived or detached from the call
  (``sensors/burn.py``); the compute detector judges these, summed over the session;
* one per process for its top CPU consumers (and every GPU user), from
  /proc/PID/stat, with ``proc.background`` and ``res.burn_seconds`` for rules;
* when the kernel refused forks at the pids limit or OOM-killed a process since the
  last sample, one sample with ``res.limit`` (``pids`` / ``memory``) charged to the
  call holding the most processes (memory).

Sampling takes at most ``_MAX_SHARE`` (15%) of a core: with many sessions in one
process the samples are spaced out beyond ``interval`` (the budgets count CPU used,
which no sample misses; only the latency grows) instead of starving the process
sensor's thread of the interpreter. The sampler thread runs at nice -10 (when bastion
runs as root): monitoring must not queue behind the agents it watches. The share is
the sampler thread's own CPU time
(``time.thread_time``), not wall time: on a crowded host a sample waits for a core
far longer than it computes, and counting that wait spaced 64 sessions' samples
seconds apart, which is what delayed a miner's kill there. A session with live
background compute (a busy streak: a miner's shape, or an honest ``nohup`` job) is
*urgent*: sampled every ``interval`` whatever the spacing of the others, so its
evidence is judged on time; so is one whose call just returned (what outlived it
is seen at once).

Only CPU *used* is measured, never run-queue demand: on a host shared by many
sessions, waiting for a core is not burning one. Bastion's own processes in the
session's ``init`` cgroup (bwrap, the supervisor) are never sampled as the agent's.

The first sample of a process covers its whole life so far (CPU since its start
time), so a miner is measured from its first instant, not from the first tick after
it appeared. GPU use per process comes from a ``GpuBackend`` (NVML, or recorded
samples in tests).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..contracts import CallRef, EventSink, Watched, make_event
from ..errors import InternalError
from ..events import Event, EventKind
from ..sandbox import scratch
from .burn import (
    SERVED_GRACE,
    ProcSample,
    Streak,
    advance_streak,
    background_pids,
    burn_threshold,
    connection_waits,
    is_burning,
    served_pids,
    split_compute,
)
from .gpu import GpuBackend, GpuSample, detect_gpu_backend
from .guard import Observed, run_guarded, telemetry
from .procfs import (
    process_name,
    read_endpoints,
    read_sched,
    read_stat,
    read_tcp_established,
)
from .runcode import mining_code
from .tcpinfo import TcpActivity

__all__ = ["ResourceSensor"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_TOP_PROCESSES = 8
_MIN_REPORTED_CORES = 0.05
_MIN_REPORTED_SECONDS = 0.005  # a call sample below this is idle noise
_MAX_SHARE = 0.15  # of one core, at most, for sampling every session
_SAMPLER_NICE = -10
_WRITER_BYTES = 1 << 20  # a call whose processes wrote less did not fill the disk
_BOMB_TAIL_SECONDS = 2.0  # refused forks this soon after a pids verdict are its bomb's


def _boot_monotonic() -> float:
    """Seconds of CLOCK_MONOTONIC at boot offset: /proc starttime is in ticks since
    boot (CLOCK_BOOTTIME), so convert through the boottime clock."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()


@dataclass
class _ProcState:
    start: int  # starttime ticks: tells a recycled pid apart
    cpu: float
    at: float
    burn: float = 0.0  # seconds burning without a break (res.burn_seconds)


@dataclass
class _CallState:
    usage_usec: int | None = None
    procs: dict[int, ProcSample] = field(default_factory=dict)
    leader: tuple[int, int] | None = None  # (host pid, start) of the call's first process
    returned: bool = False
    idle: bool = False  # no process at the last sample: nothing more to measure


@dataclass
class _SessionState:
    session: Observed
    interval: float
    next_due: float
    burn_cores: float = 1.0
    expected: tuple[str, ...] = ()
    cpu_usec: int | None = None
    at: float = 0.0
    procs: dict[int, _ProcState] = field(default_factory=dict)
    calls: dict[str, _CallState] = field(default_factory=dict)
    pids_hits: int | None = None
    oom_kills: int | None = None
    # call cgroups whose processes have all exited: nothing can enter them again (a
    # process joins a cgroup only by fork from one inside it), so they are not read
    retired: set[str] = field(default_factory=set)
    # (pid, start) of background processes a running call talked to -> until when
    # their compute still counts as served (burn.SERVED_GRACE)
    served_until: dict[tuple[int, int], float] = field(default_factory=dict)
    pids_charged: set[str] = field(default_factory=set)  # calls charged for the pids limit
    # the call last charged for the pids limit, and when: a bomb killed in one call
    # still has forks refused until its cgroup is empty, which the next sample may see
    # only once that call has ended and the next one runs
    pids_last: tuple[CallRef, float] | None = None
    tcp: TcpActivity | None = None  # sock_diag in the session's network namespace
    # live background compute at the last sample, or a call that returned since: the
    # session is sampled every interval, not spaced out with the others (module doc)
    urgent: bool = True
    busy_share: float = 0.5  # rules.detectors.background_busy_share
    # (pid, start) of background processes -> (streak, run, wait, at) at the last read
    streaks: dict[tuple[int, int], tuple[Streak, float, float, float]] = field(
        default_factory=dict)
    pids_by_call: dict[str, int] = field(default_factory=dict)  # v2: refused forks per call
    # (pid, start) of busy background processes -> mining evidence in the code they
    # run (runcode.py), read once each
    code: dict[tuple[int, int], str | None] = field(default_factory=dict)
    ooms_by_call: dict[str, int] = field(default_factory=dict)  # v2: OOM kills per call
    disk_full: bool = False  # the session's files filled their filesystem at the last look
    disk_waits: int = 0  # samples the disk has been full with no writer found yet


@dataclass
class _CallRead:
    """One call cgroup as read at one sample, before its compute is split."""

    path: Path
    ref: CallRef | None
    before: _CallState | None
    state: _CallState
    procs: dict[int, ProcSample]
    leader: int | None
    background: set[int]
    used: float


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
        self._cost = 0.0  # seconds one session's sample takes (moving average)
        self._thread = threading.Thread(target=run_guarded, args=(
            "resource", self._run, self._watched, self._set_broken),
            name="bastion-resources", daemon=True)
        self._thread.start()

    # -- observer protocol --------------------------------------------------------------

    def register(self, view: Watched, sink: EventSink) -> None:
        if self._broken:
            raise InternalError(f"the resource sensor has failed: {self._broken}")
        settings = view.policy.rules.detectors
        interval = self._interval_override or settings.sample_interval
        threshold = burn_threshold(settings.cpu_burn_cores, view.policy.sandbox.limits.cpus)
        with self._lock:
            self._sessions[view.session_id] = _SessionState(
                Observed(view, sink), interval, time.monotonic(), threshold,
                tuple(settings.expected_processes), busy_share=settings.background_busy_share)
        self._wake.set()
        if self.gpu_gap:
            sink.submit(telemetry(view, "gpu", self.gpu_gap, gap=True))

    def unregister(self, session: Watched) -> None:
        with self._lock:
            state = self._sessions.pop(session.session_id, None)
        with self._sampling:  # a sample in flight finishes before the session is let go
            if state is not None and self._broken is None:
                self._last_look(state)
        if state is not None and state.tcp is not None:
            state.tcp.close()  # it holds the session's network namespace
            state.tcp = None

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)

    # -- sampling -----------------------------------------------------------------------

    def _watched(self) -> list[Observed]:
        with self._lock:
            return [state.session for state in self._sessions.values()]

    def _set_broken(self, reason: str) -> None:
        self._broken = reason

    def _run(self) -> None:
        # the sampler runs ahead of the agents' processes when the host is crowded
        # (nice -10 for this thread only; as root): at 32 sessions on 2 cores its
        # samples were seconds apart at nice 0, and a miner's kill waits for them
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _SAMPLER_NICE)
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [s for s in self._sessions.values() if s.next_due <= now]
                upcoming = min((s.next_due for s in self._sessions.values()), default=now + 1)
            if due:
                gpu = self._gpu_samples()
                # never take more than _MAX_SHARE of a core: with many sessions in one
                # process the samples are spaced out (budgets count CPU used, so only
                # the latency grows) rather than starving the process sensor's thread
                floor = self._cost * len(self._sessions) / _MAX_SHARE
                for state in due:
                    gap = state.interval if state.urgent else max(state.interval, floor)
                    state.next_due = max(state.next_due + gap, now)
                    with self._sampling:
                        if state.session.view.session_id in self._sessions:
                            started = time.thread_time()
                            self.sample(state, gpu)
                            cost = time.thread_time() - started
                            self._cost += (cost - self._cost) * 0.1
                continue
            self._wake.wait(max(0.0, upcoming - time.monotonic()))
            self._wake.clear()

    def _last_look(self, state: _SessionState) -> None:
        """The kernel's counters once more as the session ends (it unregisters before
        its closing checkpoint): an OOM kill or refused forks since the last sample,
        by a call too short for any sample to see, still reach the trail. Counters
        only: no process is judged for compute at close."""
        session, sink = state.session
        cgroup = session.cgroup
        if cgroup is None:
            return
        # never sampled: a fresh session's counters started at zero
        state.oom_kills = 0 if state.oom_kills is None else state.oom_kills
        state.pids_hits = 0 if state.pids_hits is None else state.pids_hits
        holders: list[tuple[int, Path, CallRef | None, list[int]]] = []
        ended: list[Path] = []
        for path in _call_dirs(cgroup.unified, state.retired):
            pids = _procs(path)
            if pids:
                holders.append((len(pids), path, session.call_for_cgroup(str(path)), pids))
            else:
                ended.append(path)
        for event in self._limits(state, cgroup, holders, ended):
            sink.submit(event)

    def _gpu_samples(self) -> dict[int, GpuSample]:
        if self._gpu is None:
            return {}
        return {s.pid: s for s in self._gpu.samples()}

    def sample(self, state: _SessionState, gpu: dict[int, GpuSample]) -> None:
        session, sink = state.session
        cgroup = session.cgroup
        if cgroup is None or session.state.stopped:
            return
        now = time.monotonic()
        boot = _boot_monotonic()
        events: list[Event] = []
        usage = cgroup.cpu_usage_usec()
        fields: dict[str, Any] = {"res.scope": "session", "res.mem_bytes": cgroup.memory_bytes(),
                                  "res.pids": cgroup.pids_current()}
        interval = now - state.at if state.at else state.interval
        if usage is not None and state.cpu_usec is not None and now > state.at:
            fields["res.cpu_cores"] = round((usage - state.cpu_usec) / 1e6 / (now - state.at), 4)
            fields["res.interval"] = round(now - state.at, 4)
        state.cpu_usec, state.at = usage, now
        events.append(make_event(session, EventKind.RESOURCE, **fields))

        seen: dict[int, _ProcState] = {}
        rows: list[tuple[float, int, str, str, CallRef | None, _ProcState, bool]] = []
        calls: dict[str, _CallState] = {}
        holders: list[tuple[int, Path, CallRef | None, list[int]]] = []
        reads: list[_CallRead] = []
        ended: list[Path] = []  # calls that ran and ended since the last sample
        for path in _call_dirs(cgroup.unified, state.retired):
            pids = _procs(path)
            before = state.calls.get(path.name)
            if not pids and (before is None or before.idle):
                if before is not None:
                    state.retired.add(path.name)  # ran, and everything in it is gone
                elif (_cpu_usage_usec(path) or 0) > 0:
                    state.retired.add(path.name)  # ran and ended between two samples
                    ended.append(path)
                continue
            ref = session.call_for_cgroup(str(path))
            call_state = _CallState()
            procs: dict[int, ProcSample] = {}
            states: dict[int, str] = {}
            for pid in pids:
                stat = read_stat(pid)
                if stat is None:
                    continue
                procs[pid] = ProcSample(pid, stat.ppid, stat.sid, stat.start, stat.cpu,
                                        stat.comm, stat.children_cpu,
                                        age=now - (boot + stat.start / _CLK_TCK))
                states[pid] = stat.state
                prev = state.procs.get(pid)
                if prev is None or prev.start != stat.start:
                    since = boot + stat.start / _CLK_TCK  # its start, on the monotonic clock
                    prev = _ProcState(stat.start, 0.0, min(since, now - 1e-3))
                span = now - prev.at
                cores = (stat.cpu - prev.cpu) / span if span > 0 else 0.0
                seen[pid] = _ProcState(stat.start, stat.cpu, now)
                if cores >= _MIN_REPORTED_CORES or stat.state == "R" or pid in gpu:
                    rows.append((cores, pid, stat.comm, stat.state, ref, prev, False))
            holders.append((len(procs), path, ref, list(procs)))
            call_state.procs = procs
            call_state.leader = self._leader(session, ref, procs, before)
            leader_pid = call_state.leader[0] if call_state.leader is not None else None
            if leader_pid is not None and (leader_pid not in procs or procs[leader_pid].start
                                           != call_state.leader[1]):
                leader_pid = None
            background = background_pids(procs, leader_pid)
            old = before.procs if before is not None else {}
            for pid in background:
                # how long it was runnable: read for background processes that are
                # active (or were, for the difference); an idle daemon costs nothing
                proc, prior = procs[pid], old.get(pid)
                live = state.streaks.get((pid, proc.start))
                if states.get(pid) == "R" or (live is not None and live[0].cpu > 0) or (
                        prior is not None and prior.start == proc.start
                        and prior.cpu != proc.cpu):
                    sched = read_sched(pid)
                    if sched is not None:
                        procs[pid] = replace(proc, run=sched[0], wait=sched[1])
            call_used = _cpu_usage_usec(path)
            call_state.usage_usec = call_used
            if call_used is not None:
                used = (call_used - (before.usage_usec or 0)) / 1e6 if before is not None \
                    else call_used / 1e6
            else:
                used = sum(p.cpu + p.children - (
                    before.procs[p.pid].cpu + before.procs[p.pid].children
                    if before and p.pid in before.procs else 0.0) for p in procs.values())
            reads.append(_CallRead(path, ref, before, call_state, procs, leader_pid,
                                   background, used))
        served = self._served(state, reads, now)
        streaks = self._streaks(state, reads, served, now)
        for read in reads:
            path, ref, before, call_state, procs = (read.path, read.ref, read.before,
                                                    read.state, read.procs)
            compute = split_compute(read.used, procs, before.procs if before else {},
                                    read.leader, state.expected,
                                    was_returned=before.returned if before else False,
                                    served=served & read.background, streaks=streaks)
            call_state.returned = compute.returned
            call_state.idle = not procs
            calls[path.name] = call_state
            background = set(compute.background_pids)
            rows = [r[:6] + (r[1] in background,) if r[4] == ref else r for r in rows]
            if ref is None or (compute.used < _MIN_REPORTED_SECONDS
                               and compute.background < _MIN_REPORTED_SECONDS
                               and compute.runnable < _MIN_REPORTED_SECONDS):
                continue
            names = sorted({procs[p].name for p in compute.background_pids})
            evidence = self._code_evidence(state, procs, streaks, compute.background_pids)
            events.append(make_event(session, EventKind.RESOURCE, call=ref, **{
                "res.scope": "call", "res.cpu_seconds": round(compute.used, 4),
                "res.bg_cpu_seconds": round(compute.background, 4),
                "res.bg_persistent_cpu_seconds": round(compute.persistent, 4),
                "res.bg_runnable_seconds": round(compute.runnable, 4),
                "res.bg_runnable_cpu_seconds": round(compute.runnable_cpu, 4),
                "res.served_cpu_seconds": round(compute.served, 4),
                "res.cpu_cores": round(compute.used / interval, 4) if interval > 0 else 0.0,
                "res.interval": round(interval, 4), "call.returned": compute.returned,
                "res.procs": len(procs), "res.bg_pids": list(compute.background_pids)[:16],
                "res.bg_names": ",".join(names[:8]),
                **({"res.bg_evidence": evidence} if evidence else {})}))
        # urgent: live background compute (a streak was read), or a call returned
        # since the last sample and left processes behind
        state.urgent = bool(streaks) or any(
            c.returned and c.procs and not (state.calls.get(n) and state.calls[n].returned)
            for n, c in calls.items())
        state.calls = calls
        events += self._limits(state, cgroup, holders, ended)
        events += self._disk(state, holders)
        rows.sort(key=lambda r: r[0], reverse=True)
        reported = rows[:_TOP_PROCESSES]
        reported += [r for r in rows[_TOP_PROCESSES:] if r[1] in gpu]
        for cores, pid, comm, state_code, call, prev, background in reported:
            span = now - prev.at
            pfields: dict[str, Any] = {
                "res.scope": "process", "res.cpu_cores": round(cores, 4),
                "res.interval": round(span, 4), "proc.comm": comm, "proc.state": state_code,
                "proc.background": background}
            if is_burning(cores, state.burn_cores):
                seen[pid].burn = prev.burn + span
            pfields["res.burn_seconds"] = round(seen[pid].burn, 3)
            exe = _readlink(f"/proc/{pid}/exe") or ""
            args = _args(pid)
            pfields.update({"proc.name": process_name(comm, exe, args), "proc.exe": exe,
                            "proc.cmdline": " ".join(args)})
            g = gpu.get(pid)
            if g is not None:
                pfields["res.gpu_util"] = g.util_percent
                pfields["res.gpu_mem_bytes"] = g.mem_bytes
            events.append(make_event(session, EventKind.RESOURCE, call=call, pid=pid, **pfields))
        state.procs = seen
        self.samples += 1
        for event in events:
            sink.submit(event)

    @staticmethod
    def _code_evidence(state: _SessionState, procs: dict[int, ProcSample],
                       streaks: dict[int, Streak], background: Any) -> str | None:
        """Mining evidence in the code a busy background process of the call runs
        (``runcode.py``): read once per process, only for those in a busy streak."""
        found = None
        for pid in background:
            proc = procs.get(pid)
            if proc is None or pid not in streaks:
                continue
            key = (pid, proc.start)
            if key not in state.code:
                if len(state.code) > 1024:
                    state.code.clear()
                state.code[key] = mining_code(pid)
            found = found or state.code[key]
        return found

    @staticmethod
    def _served(state: _SessionState, reads: list[_CallRead], now: float) -> set[int]:
        """Background processes (host pids) that a running call talks to now, or did
        within ``SERVED_GRACE`` seconds (``burn.served_pids``). Endpoints are read
        only when a call is running and some background process is active."""
        out: set[int] = set()
        for read in reads:
            for pid in read.background:
                proc = read.procs[pid]
                if state.served_until.get((pid, proc.start), 0.0) > now:
                    out.add(pid)
        running = [r for r in reads if r.leader is not None]
        active: dict[int, ProcSample] = {}
        for read in reads:
            old = read.before.procs if read.before is not None else {}
            for pid in read.background:
                proc, prior = read.procs[pid], old.get(pid)
                if prior is None or prior.start != proc.start or prior.cpu != proc.cpu \
                        or proc.children != prior.children:
                    active[pid] = proc
        if running and active:
            ignore: set[str] = set()
            foreground: dict[int, frozenset[str]] = {}
            for read in running:
                ignore |= _stdio(read.leader)  # type: ignore[arg-type]
                for pid in read.procs:
                    if pid not in read.background:
                        foreground[pid] = read_endpoints(pid)
            tcp = read_tcp_established(running[0].leader)  # type: ignore[arg-type]
            waiting = ResourceSensor._waiting(state, running[0].leader, tcp)  # type: ignore[arg-type]
            parents = {pid: proc.ppid for r in reads for pid, proc in r.procs.items()
                       if pid in r.background}
            background = {pid: read_endpoints(pid) for pid in active}
            # a worker of a daemon is served when the daemon is: its endpoints are
            # not needed, only its ancestry (``parents``)
            for r in reads:
                for pid in r.background:
                    background.setdefault(pid, frozenset())
            found = served_pids(foreground, background, tcp, parents, frozenset(ignore),
                                waiting)
            for read in reads:
                for pid in read.background & found:
                    state.served_until[(pid, read.procs[pid].start)] = now + SERVED_GRACE
            out |= found
        if len(state.served_until) > 256:
            state.served_until = {k: v for k, v in state.served_until.items() if v > now}
        return out

    @staticmethod
    def _streaks(state: _SessionState, reads: list[_CallRead], served: set[int],
                 now: float) -> dict[int, Streak]:
        """Advance the busy streak of every background process whose schedstat was
        read this sample (``burn.advance_streak``); a process that was not read (idle),
        is served, or is gone has none."""
        kept: dict[tuple[int, int], tuple[Streak, float, float, float]] = {}
        out: dict[int, Streak] = {}
        for read in reads:
            old = read.before.procs if read.before is not None else {}
            for pid in read.background:
                proc = read.procs[pid]
                key = (pid, proc.start)
                prior = state.streaks.get(key)
                if proc.run is None:  # idle: no streak, the baseline stays
                    if prior is not None:
                        kept[key] = (Streak(), *prior[1:])
                    continue
                if pid in served:  # its work is a call's: no streak, a new baseline
                    kept[key] = (Streak(), proc.run, proc.wait, now)
                    continue
                earlier = old.get(pid)
                if prior is None and earlier is not None and earlier.start == proc.start:
                    # seen before, never read: what it did earlier is not this streak
                    kept[key] = (Streak(), proc.run, proc.wait, now)
                    continue
                if prior is None:  # new since the last sample: its whole life so far
                    streak = advance_streak(Streak(), proc.run, proc.wait, max(proc.age, 1e-3),
                                            state.busy_share)
                else:
                    streak = advance_streak(prior[0], proc.run - prior[1], proc.wait - prior[2],
                                            now - prior[3], state.busy_share)
                kept[key] = (streak, proc.run, proc.wait, now)
                out[pid] = streak
        state.streaks = kept
        return out

    @staticmethod
    def _waiting(state: _SessionState, pid: int,
                 tcp: dict[str, tuple[str, str]]) -> frozenset[str]:
        """The established TCP sockets of the session that carry a request their
        client waits on (``burn.connection_waits``), from the kernel's tcp_info."""
        if not tcp:
            return frozenset()
        if state.tcp is None:
            try:
                state.tcp = TcpActivity(pid)  # any other OSError: the sensor fails closed
            except (FileNotFoundError, ProcessLookupError):
                return frozenset()  # the call ended since its sample: nobody waits
        grace = int(SERVED_GRACE * 1000)
        return frozenset(name for name, (sent, recv, acked) in state.tcp.idle_ms().items()
                         if connection_waits(sent, recv, acked, grace))

    @staticmethod
    def _disk(state: _SessionState,
              holders: list[tuple[int, Path, CallRef | None, list[int]]]) -> list[Event]:
        """An event when the session's files fill the size-limited tmpfs they live on
        (``sandbox/scratch.py``: the kernel refuses writes past it with ENOSPC), once
        per filling: the filesystem's own statfs counters, not a guess. Charged to
        the call whose live processes wrote the most (``wchar``), else the newest
        call with processes, else the latest call. An operator-configured workspace on
        the host's disk is an overlay whose upper layer is that tmpfs (its statfs is the
        tmpfs's): judged the same way."""
        session = state.session.view
        limits = session.policy.sandbox.limits
        use = scratch.usage(session.workspace)
        if use is None:
            return []
        used, total, inodes_used, inodes_total = use
        if not total or total > scratch.effective_size(limits.disk, limits.memory) + (1 << 16):
            return []  # not the session's tmpfs (a workspace on the host's disk)
        full = total - used < 64 * 1024 or (inodes_total and inodes_used >= inodes_total - 1)
        if not full:
            state.disk_full, state.disk_waits = False, 0
        if not full or state.disk_full:
            return []
        # the call whose live processes wrote the most (/proc/PID/io counts what a
        # process's reaped children wrote too); a writer that hit ENOSPC may be exiting
        # and not yet reaped: look again for a couple of samples, then charge the
        # newest call with processes, else the latest call
        wrote = [(sum(_wchar(pid) for pid in pids), _call_number(path), ref)
                 for count, path, ref, pids in holders if count and ref is not None]
        best = max(wrote, key=lambda t: (t[0] >= _WRITER_BYTES, t[1], t[0]), default=None)
        if (best is None or best[0] < _WRITER_BYTES) and state.disk_waits < 3:
            state.disk_waits += 1
            return []
        state.disk_full = True
        ref = best[2] if best is not None else session.latest_call()
        what = "bytes" if total - used < 64 * 1024 else "inodes"
        return [make_event(session, EventKind.RESOURCE, call=ref, **{
            "res.scope": "session", "res.limit": "disk", "res.limit_hits": 1,
            "res.disk_what": what, "res.disk_bytes": used, "res.disk_limit_bytes": total,
            "res.disk_inodes": inodes_used, "res.disk_limit_inodes": inodes_total})]

    @staticmethod
    def _leader(session: Watched, ref: CallRef | None, procs: dict[int, ProcSample],
                before: _CallState | None) -> tuple[int, int] | None:
        """The call's first process: a session leader (the supervisor calls setsid)
        that the session knows as the call's host pid. Remembered once found."""
        if before is not None and before.leader is not None:
            return before.leader
        if ref is None:
            return None
        for pid, proc in procs.items():
            if proc.sid == pid and session.call_by_host_pid(pid) == ref:
                return (pid, proc.start)
        return None

    def _limits(self, state: _SessionState, cgroup: Any,
                holders: list[tuple[int, Path, CallRef | None, list[int]]],
                ended: list[Path]) -> list[Event]:
        """Events for forks refused at the pids limit and OOM kills since the last
        sample, charged to the call holding the most processes (memory).

        A fork or thread bomb may be over by the sample that sees its refused forks
        (a Python thread bomb dies of its own "can't start new thread"): when no live
        call holds a real share of the tasks, the newest call that ran in the interval
        is charged, unless a call already charged for the limit is among them (its
        dying bomb's last refused forks are not the next call's)."""
        session = state.session.view
        out: list[Event] = []
        before = dict(state.pids_by_call)
        hits = _pids_limit_hits(cgroup, [h[1] for h in holders] + ended, state.pids_by_call)
        # v2 counts refused forks per call cgroup too: the call whose own count moved is
        # the one whose processes hit the limit (a bomb over by this sample included)
        moved = {name: n - before.get(name, 0) for name, n in state.pids_by_call.items()
                 if n > before.get(name, 0)}
        ooms = cgroup.oom_kills()
        if state.pids_hits is not None and hits > state.pids_hits:
            # the call holding the most tasks (threads count against pids.max too); a
            # call holding few is not the one that hit the limit (forks refused just
            # before the bomb was killed show up a sample later)
            tasks = [(_tasks(path), ref) for _count, path, ref, _pids in holders]
            count, ref = max(tasks, key=lambda t: t[0], default=(0, None))
            limit = session.policy.sandbox.limits.pids
            culprit = max(moved, key=lambda name: moved[name]) if moved else None
            found = None
            if culprit is not None and (ref is None or count * 4 < limit):
                path = next((p for p in [h[1] for h in holders] + ended if p.name == culprit),
                            None)
                found = session.call_for_cgroup(str(path)) if path is not None else None
                if found is not None:
                    ref, count = found, 0
            if found is None and (ref is None or count * 4 < limit):
                # a running call that holds few tasks is not a bomb; a bomb that is over
                # ended its call: the calls that ended in the interval come first
                ran = [(_call_number(p), session.call_for_cgroup(str(p)))
                       for p in (ended or [h[1] for h in holders])]
                ran = [(n, r) for n, r in ran if r is not None]
                charged = [r for _n, r in ran if r.call_id in state.pids_charged]
                recent = state.pids_last
                if not charged and recent is not None and \
                        time.monotonic() - recent[1] <= _BOMB_TAIL_SECONDS:
                    charged = [recent[0]]  # the tail of a bomb already charged and killed
                newest = max(ran, key=lambda t: t[0], default=(0, None))[1]
                ref, count = (charged[0] if charged else newest), 0
            if ref is not None:
                state.pids_charged.add(ref.call_id)
                state.pids_last = (ref, time.monotonic())
                out.append(make_event(session, EventKind.RESOURCE, call=ref, **{
                    "res.scope": "session", "res.limit": "pids",
                    "res.limit_hits": hits - state.pids_hits, "res.pids": cgroup.pids_current(),
                    "res.call_pids": count}))
        killed_in = _oom_kills_by_call([h[1] for h in holders] + ended, state.ooms_by_call)
        if state.oom_kills is not None and ooms > state.oom_kills:
            ref = None
            best = -1
            returned = False
            if killed_in:
                # v2 counts the kills per call cgroup: the call whose processes the
                # kernel killed is charged, even when they are gone by this sample
                name = max(killed_in, key=lambda n: killed_in[n])
                path = next(p for p in [h[1] for h in holders] + ended if p.name == name)
                ref = session.call_for_cgroup(str(path))
                holder = state.calls.get(name)
                returned = holder.returned if holder is not None else path in ended
            for _count, path, call, pids in holders if ref is None else ():
                rss = sum(_rss(pid) for pid in pids)
                if call is not None and pids and rss > best:
                    ref, best = call, rss
                    holder = state.calls.get(path.name)
                    returned = holder.returned if holder is not None else False
            gone = ended + [path for count, path, _call, _pids in holders if not count]
            if ref is None and gone:
                # no per-call count (v1 memory) and nothing alive holds memory: the
                # bomb's call was over by this sample; the newest call that ended
                newest = max(gone, key=_call_number)
                ref, returned = session.call_for_cgroup(str(newest)), True
            out.append(make_event(session, EventKind.RESOURCE, call=ref, **{
                "res.scope": "session", "res.limit": "memory", "call.returned": returned,
                "res.limit_hits": ooms - state.oom_kills, "res.mem_bytes": cgroup.memory_bytes()}))
        state.pids_hits, state.oom_kills = hits, ooms
        return out


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


def _call_dirs(unified: Path, retired: set[str]) -> list[Path]:
    """The session's live call cgroups (never ``init``: bastion's own processes)."""
    with contextlib.suppress(OSError), os.scandir(unified) as entries:
        return [Path(e.path) for e in entries
                if e.name.startswith("call-") and e.name not in retired and e.is_dir()]
    return []


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _cpu_usage_usec(path: Path) -> int | None:
    """CPU used by every process that ever ran in a (v2) cgroup: cpu.stat exists
    whether or not the cpu controller is enabled there."""
    data = _read(f"{path}/cpu.stat")
    if data and data.startswith(b"usage_usec "):
        with contextlib.suppress(ValueError):
            return int(data.split(b"\n", 1)[0].split()[1])
    return None


def _events_count(path: Path, key: str) -> int:
    data = _read(str(path))
    prefix = key.encode() + b" "
    for line in (data or b"").splitlines():
        if line.startswith(prefix):
            with contextlib.suppress(ValueError):
                return int(line.split()[1])
    return 0


def _pids_limit_hits(cgroup: Any, call_dirs: list[Path], by_call: dict[str, int]) -> int:
    """Forks refused at the pids limit so far: the v1 ``calls`` group on a hybrid
    host, else the session and every call cgroup (v2 caps each call; ``by_call``
    keeps the last count of each call, so one that ended still counts)."""
    v1 = getattr(cgroup, "v1", {}) or {}
    if "pids" in v1:
        return _events_count(v1["pids"] / "calls" / "pids.events", "max") + \
            _events_count(v1["pids"] / "pids.events", "max")
    for path in call_dirs:
        by_call[path.name] = max(by_call.get(path.name, 0),
                                 _events_count(path / "pids.events", "max"))
    return _events_count(cgroup.unified / "pids.events", "max") + sum(by_call.values())


def _oom_kills_by_call(call_dirs: list[Path], by_call: dict[str, int]) -> dict[str, int]:
    """Processes the kernel OOM-killed in each call cgroup since the last look (v2
    ``memory.events`` ``oom_kill`` counts the kills of the cgroup's own processes,
    whichever limit was hit); ``by_call`` keeps the last count of each call."""
    moved: dict[str, int] = {}
    for path in call_dirs:
        count = _events_count(path / "memory.events", "oom_kill")
        before = by_call.get(path.name, 0)
        if count > before:
            moved[path.name] = count - before
            by_call[path.name] = count
    return moved


def _stdio(pid: int) -> set[str]:
    """The pipes and sockets of a call leader's stdin/stdout/stderr: a detached
    process that kept them is not talking to the call."""
    out: set[str] = set()
    for fd in (0, 1, 2):
        link = _readlink(f"/proc/{pid}/fd/{fd}")
        if link:
            out.add(link)
    return out


def _wchar(pid: int) -> int:
    """Bytes the process passed to write() so far (/proc/PID/io)."""
    data = _read(f"/proc/{pid}/io")
    for line in (data or b"").splitlines():
        if line.startswith(b"wchar:"):
            with contextlib.suppress(ValueError):
                return int(line.split()[1])
    return 0


def _call_number(path: Path) -> int:
    with contextlib.suppress(ValueError):
        return int(path.name.rsplit("-", 1)[-1])
    return 0


def _tasks(path: Path) -> int:
    with contextlib.suppress(OSError), open(path / "cgroup.threads") as f:
        return sum(1 for _ in f)
    return 0


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def _procs(path: Path) -> list[int]:
    with contextlib.suppress(ValueError):
        return [int(x) for x in (_read(f"{path}/cgroup.procs") or b"").split()]
    return []
