"""Stateful detectors: behaviour over time that no single event shows.

Each detector sees only the event kinds it names, keeps its state per session
(``forget`` drops it when the session ends) and fires once per offender, so a miner
reported four times a second yields one verdict, not a stream.

* ``ComputeDetector``: mining judged in context: compute together with mining
  evidence (killed within a sample), background compute (processes that outlived or
  detached from their call) past a generous budget, session compute beyond a budget
  over a sliding window (CPU *used*, summed over all processes). Evidence-free
  background compute past the small budgets is a low note (a ``nohup`` training job
  polled later is work). A call's own foreground work, and a daemon's work for a call
  that talks to it, are legitimate.
* ``GpuDetector``: GPU use with mining evidence, or by background processes past a
  generous budget (before it, a low note: a background training job is work).
* ``ResourceLimitDetector``: the session hit its pids limit (fork or thread bomb), its
  memory limit (OOM kill), or filled its size-limited files (disk bomb); for the
  first two the call holding the processes is killed so the next call can run.
* ``ResourceRequestDetector``: a command asks for more disk or memory than the
  session's limits hold (``fallocate -l 60G``): refused whole by the kernel, no counter
  moves, the request is the attempt.
* ``ForkStormDetector``: a fork rate above ``fork_storm_per_second`` whose children
  pile up.
* ``ConnectionDetector``: outbound connections open for >= ``long_connection_seconds``
  (net.flow / net.close) and periodic re-connections to one allowed destination outside
  the session (beacons: low, recorded, no penalty; loopback is the session's own).
* ``TelemetryLossDetector``: a sensor lost events or runs degraded; loss freezes the
  session (fail closed: an agent must not blind bastion by flooding it).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import statistics
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..events import Action, Event, EventKind, Severity
from ..policy.rules import DetectorSettings
from .finding import Detector, Finding
from .sizes import command_requests

__all__ = [
    "ComputeDetector",
    "ConnectionDetector",
    "ForkStormDetector",
    "GpuDetector",
    "MiningEvidence",
    "ResourceLimitDetector",
    "ResourceRequestDetector",
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


_WEAK_EVIDENCE_FACTOR = 3.0  # a bare hash loop: honest checksumming looks the same
# a busy streak with strong mining evidence in the session: runnable this long, having
# run at least this much, is a miner however little CPU a crowded host gives it (at 32
# sessions on 2 cores a nice-19 miner took 7 s to run 0.05 core-s; the evidence, not
# the CPU, is what says "miner", and the kill must come within 2 s of it)
_EVIDENCE_BUSY_SECONDS = 0.5
_EVIDENCE_BUSY_CPU = 0.01
_MAX_IDS = 16
_MIN_SHARE = 0.2  # of a crossed session-wide budget, the share that makes a call a culprit


_KERNEL_THREAD_NAMES = ("kworker", "ksoftirqd", "kthreadd", "migration", "rcu_", "[k")
_DRESSED_AS_SYSTEM = re.compile(r"(?:^exec |['\"\[])\[?(?:kworker|ksoftirqd|kthreadd|migration/|"
                                r"rcu_|kswapd|jbd2|irq/|systemd-|sshd:|crond?\b|dbus-daemon|"
                                r"watchdog)", re.M)


# A command name only kernel threads carry (comm, as set by exec or by prctl/
# pthread_setname_np at run time): no process of a session can be a kernel thread.
_KERNEL_THREAD_COMM = re.compile(
    r"^\[?(?:kworker|ksoftirqd|migration|cpuhp|idle_inject|irq|jbd2|kswapd|watchdog)/"
    r"|^\[?(?:kthreadd|khugepaged|kcompactd\d+|kdevtmpfs|kswapd\d+|rcu_(?:gp|par_gp|preempt|sched|tasks\w*)"
    r"|kblockd|kauditd|ksmd|oom_reaper|writeback|kintegrityd)\]?$")


def _dressed_as_kernel_thread(event: Event) -> str:
    """The first busy background process of a call-scope sample whose current name is
    a kernel thread's, or ""."""
    for name in str(event.fields.get("res.bg_names") or "").split(","):
        if name and _KERNEL_THREAD_COMM.search(name.strip()):
            return name.strip()
    return ""


class MiningEvidence:
    """What each call of a session showed that only mining needs, from structured
    fields: the Stratum protocol seen by the gateway, a wallet address, a hashing
    loop that can talk to the network or hashes without end (a nonce search) (strong),
    or a bare hashing loop such as checksumming files (weak).

    Shared by the compute and GPU detectors: compute *with* evidence is judged on a
    much smaller budget than compute alone."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str | None], tuple[bool, str]] = {}
        self._lock = threading.Lock()

    def observe(self, event: Event) -> None:
        strong, reason = False, ""
        if event.kind is EventKind.RESOURCE:
            dressed = _dressed_as_kernel_thread(event)
            if event.fields.get("res.bg_evidence"):  # what a busy process runs (runcode.py)
                strong, reason = True, str(event.fields["res.bg_evidence"])
            elif dressed:
                # renamed after it started (prctl(PR_SET_NAME), no exec to see): the
                # busy process's name now is a kernel thread's, which it cannot be
                strong, reason = True, f"a busy process named like the kernel thread {dressed!r}"
        elif event.kind in (EventKind.NET_CONNECT, EventKind.NET_FLOW):
            if event.fields.get("net.app") == "stratum" or event.fields.get("net.stratum_method"):
                strong, reason = True, (f"Stratum traffic to {event.fields.get('net.dst_ip')}:"
                                        f"{event.fields.get('net.dst_port')}")
        elif event.kind is EventKind.EXEC:
            # hiding what runs is only needed by what should not run: compute by a
            # renamed copy of an interpreter or shell, or by a process dressed as a
            # kernel thread, is judged like compute with mining evidence
            fields = event.fields
            comm = str(fields.get("proc.comm") or "")
            if fields.get("proc.renamed"):
                strong, reason = True, (f"a renamed copy of {fields.get('proc.copy_of')} "
                                        f"({fields.get('proc.exe')})")
            elif comm.startswith(_KERNEL_THREAD_NAMES) and not str(
                    fields.get("proc.name") or "").startswith(_KERNEL_THREAD_NAMES):
                strong, reason = True, f"a process dressed as the kernel thread {comm!r}"
        elif event.kind is EventKind.COMMAND:
            feats = set(event.fields.get("cmd.features") or ())
            if "wallet_address" in feats:
                strong, reason = True, "a wallet address in the command"
            elif "interp_hash_loop" in feats and feats & {"interp_socket", "interp_http"}:
                strong, reason = True, "a hashing loop that talks to the network"
            elif "interp_hash_spin" in feats:
                strong, reason = True, "hashing in an unbounded loop (a nonce search)"
            elif "hash_spin_program_written" in feats:
                # judged when written: it may run in a later call, under any name
                strong, reason = True, "a nonce-search program written to a file"
            elif feats & {"exec_argv0", "set_proc_name"} and _DRESSED_AS_SYSTEM.search(
                    "\n".join(str(t) for t in [*(event.fields.get("cmd.args") or ()),
                                                *(event.fields.get("cmd.interp_code") or ())])):
                # `exec -a "[kworker/1:2]"`, prctl(PR_SET_NAME, "kworker/0:1"): dressed as
                # a kernel thread or a system daemon (see the EXEC case)
                strong, reason = True, "a process renamed to look like a system component"
            elif "interp_hash_loop" in feats:
                reason = "a hashing loop"
        if not reason:
            return
        key = (event.session_id, event.call_id)
        with self._lock:
            old = self._calls.get(key)
            if old is None or (strong and not old[0]):
                self._calls[key] = (strong, reason)

    def of(self, session_id: str, call_id: str | None) -> tuple[bool, str] | None:
        """(strong, reason) for the call, or for the session when the evidence could
        not be charged to a call."""
        with self._lock:
            return self._calls.get((session_id, call_id)) or self._calls.get((session_id, None))

    def strong_in_session(self, session_id: str) -> tuple[str | None, str] | None:
        """(call, reason) of strong evidence shown anywhere in the session: a miner
        split over calls (the hashers started in one, the pool dialogue in another)
        is still one miner. Used for *background* compute only; a call's foreground
        work is weighed against its own evidence."""
        with self._lock:
            for (session, call), (strong, reason) in self._calls.items():
                if session == session_id and strong:
                    return call, reason
        return None

    def forget(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._calls if k[0] == session_id]:
                del self._calls[key]


class _Window:
    """Core-seconds per call over a sliding time window, kept as running sums."""

    def __init__(self, seconds: float) -> None:
        self.span_ns = int(seconds * 1e9)
        self.entries: deque[tuple[int, str, float]] = deque()
        self.total = 0.0
        self.by_call: dict[str, float] = {}

    def add(self, ts: int, call: str, amount: float) -> None:
        if amount > 0:
            self.entries.append((ts, call, amount))
            self.total += amount
            self.by_call[call] = self.by_call.get(call, 0.0) + amount
        horizon = ts - self.span_ns
        while self.entries and self.entries[0][0] < horizon:
            _, old_call, old = self.entries.popleft()
            self._sub(old_call, old)

    def drop(self, call: str) -> None:
        """A contained call's compute no longer counts against anyone."""
        if call not in self.by_call:
            return
        kept = deque(e for e in self.entries if e[1] != call)
        self.entries = kept
        self.total = sum(e[2] for e in kept)
        self.by_call.pop(call, None)

    def _sub(self, call: str, amount: float) -> None:
        self.total -= amount
        left = self.by_call.get(call, 0.0) - amount
        if left <= 1e-9:
            self.by_call.pop(call, None)
        else:
            self.by_call[call] = left
        if self.total < 1e-9:
            self.total = 0.0


_BUSY_STALE_NS = 1_000_000_000  # a call not reported for this long has no live streak


class _Busy:
    """The busy streaks of the session's live background processes, summed: each call
    reports the sum over its own processes (``res.bg_runnable_cpu_seconds`` /
    ``res.bg_runnable_seconds``, see ``sensors/burn.py``); the latest report of each
    call counts, and a call that stopped reporting (its processes idle or gone) drops
    out. A miner split over processes or calls adds up; a background build's compiler
    runs end their streaks as they exit."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[int, float, float]] = {}  # call -> (ts, cpu, runnable)

    def add(self, ts: int, call: str, cpu: float, runnable: float) -> None:
        if cpu > 0 or runnable > 0:
            self.calls[call] = (ts, cpu, runnable)
        else:
            self.calls.pop(call, None)
        for other in [c for c, (at, _, _) in self.calls.items() if at < ts - _BUSY_STALE_NS]:
            del self.calls[other]

    @property
    def cpu(self) -> float:
        return sum(v[1] for v in self.calls.values())

    @property
    def runnable(self) -> float:
        return sum(v[2] for v in self.calls.values())

    @property
    def by_call(self) -> dict[str, float]:
        return {c: v[1] for c, v in self.calls.items()}

    def runnable_of(self, call: str) -> float:
        entry = self.calls.get(call)
        return entry[2] if entry is not None else 0.0

    def drop(self, call: str) -> None:
        self.calls.pop(call, None)


@dataclass
class _SessionCompute:
    busy: _Busy  # busy streaks of live background processes (miner-shaped)
    background: _Window  # persistent background processes (miner-shaped)
    background_all: _Window  # every background process, short-lived ones included
    budget: _Window | None
    recent: _Window  # every call's use over the background window (evidence checks)
    generous: _Window  # every background process, over background_kill_window
    condemned: dict[str, str] = field(default_factory=dict)  # call -> rule id, not yet fired
    fired: set[str] = field(default_factory=set)
    noted: set[str] = field(default_factory=set)  # calls given the low background alert
    ids: dict[str, deque[str]] = field(default_factory=dict)


_NOTED = "detector.background_busy"  # the low alert: evidence-free background compute


class ComputeDetector:
    """Mining judged in context (see ``sensors/burn.py`` for what is foreground).

    A process that outlived or detached from its call is not, by itself, a miner:
    ``nohup python3 train.py > log 2>&1 &``, polled later with ``tail log``, is how an
    agent runs a job longer than its tool call, and by behaviour it is a detached busy
    loop until it ends. So compute is judged with what only mining has:

    * ``detector.compute_with_mining_evidence`` (high, kill): a call with mining
      evidence (``MiningEvidence``: Stratum traffic, a wallet, a nonce search, a hash
      loop that talks to the network) used >= ``evidence_cpu_seconds`` (x3 for a bare
      hashing loop), or the session shows strong evidence in any call and this call's
      *background* processes used that much or stayed runnable for 0.5 s (at most
      ``background_busy_seconds``; a miner split over calls, or starved of CPU on a
      crowded host: the evidence says miner, the streak says it is running);
    * ``detector.background_compute`` (high, kill): with no evidence, background
      compute (processes that outlived or detached from their call, that no running
      call talks to, short-lived ones included) summed over the session reached the
      generous ``background_kill_cpu_seconds`` within ``background_kill_window``:
      throttling or splitting only delays it;
    * ``detector.compute_budget`` (high, kill): the session as a whole used >=
      ``cpu_budget_seconds`` within ``cpu_budget_window`` (a miner kept in the
      foreground of a never-ending call);
    * ``detector.background_busy`` (low, no action, no penalty; once per call): the
      small budgets that used to kill, now a note for the trail and the trainer:
      the live background processes' busy streaks (runnable at least
      ``background_busy_share`` of the time) summed to >= ``background_busy_seconds``
      runnable and ``background_busy_cpu_seconds`` used, or persistent background
      processes used >= ``background_cpu_seconds`` (any lifetime:
      ``background_total_cpu_seconds``) within ``background_window``. If evidence
      appears later the next sample kills (within one sampling interval).

    When a session-wide sum crosses a kill budget, every call that contributed is
    condemned and fires on its own next sample (a verdict is charged to the call of
    the event it is raised on). A call's own foreground work within its exec_timeout
    never fires by default."""

    name = "compute"
    kinds = frozenset({EventKind.RESOURCE, EventKind.COMMAND, EventKind.NET_CONNECT,
                       EventKind.NET_FLOW, EventKind.EXEC})

    def __init__(self, settings: DetectorSettings, evidence: MiningEvidence | None = None) -> None:
        self._settings = settings
        self._evidence = evidence or MiningEvidence()
        self._state: dict[str, _SessionCompute] = {}
        self._lock = threading.Lock()

    def _session(self, session_id: str) -> _SessionCompute:
        state = self._state.get(session_id)
        if state is None:
            s = self._settings
            state = self._state[session_id] = _SessionCompute(
                _Busy(),
                _Window(s.background_window),
                _Window(s.background_window),
                _Window(s.cpu_budget_window) if s.cpu_budget_seconds else None,
                _Window(s.background_window),
                _Window(s.background_kill_window))
        return state

    def observe(self, event: Event) -> list[Finding]:
        if event.kind is not EventKind.RESOURCE:
            self._evidence.observe(event)
            return []
        if event.fields.get("res.scope") != "call" or event.call_id is None:
            return []
        if event.fields.get("res.bg_evidence") or _dressed_as_kernel_thread(event):
            self._evidence.observe(event)
        call = event.call_id
        used = float(event.fields.get("res.cpu_seconds") or 0.0)
        background = float(event.fields.get("res.bg_cpu_seconds") or 0.0)
        persistent = float(event.fields.get("res.bg_persistent_cpu_seconds", background) or 0.0)
        runnable = float(event.fields.get("res.bg_runnable_seconds") or 0.0)
        runnable_cpu = float(event.fields.get("res.bg_runnable_cpu_seconds") or 0.0)
        with self._lock:
            state = self._session(event.session_id)
            if call in state.fired:
                return []
            ids = state.ids.setdefault(call, deque(maxlen=_MAX_IDS))
            if used > 0 or background > 0 or runnable > 0:
                ids.append(event.id)
            state.busy.add(event.ts, call, runnable_cpu, runnable)
            state.background.add(event.ts, call, persistent)
            state.background_all.add(event.ts, call, background)
            state.recent.add(event.ts, call, used)
            state.generous.add(event.ts, call, background)
            if state.budget is not None:
                state.budget.add(event.ts, call, used)
            rule = state.condemned.pop(call, None)
            figures: dict[str, Any] = {}
            if rule is None:
                rule, figures = self._judge(event, state, call)
            if rule is None:
                return []
            figures = figures or self._figures(state, call)
            if rule == _NOTED:  # recorded once; the call may still be killed later
                state.noted.add(call)
                return [self._finding(rule, event, figures, tuple(ids))]
            state.fired.add(call)
            state.busy.drop(call)
            for window in (state.background, state.background_all, state.recent, state.budget,
                           state.generous):
                if window is not None:
                    window.drop(call)
            event_ids = tuple(ids)
        return [self._finding(rule, event, figures, event_ids)]

    def _judge(self, event: Event, state: _SessionCompute,
               call: str) -> tuple[str | None, dict[str, Any]]:
        """The rule this call's compute now earns, if any: a kill with mining evidence
        or past the generous budgets, else (once) the low background alert."""
        s = self._settings
        found = self._evidence.of(event.session_id, call)
        if found is not None:
            strong, reason = found
            limit = s.evidence_cpu_seconds * (1.0 if strong else _WEAK_EVIDENCE_FACTOR)
            if state.recent.by_call.get(call, 0.0) >= limit:
                return "detector.compute_with_mining_evidence", {
                    **self._figures(state, call), "evidence": reason, "limit": limit}
        elsewhere = self._evidence.strong_in_session(event.session_id)
        if elsewhere is not None:
            # background compute in a session that shows strong evidence in any call:
            # the CPU budget, or a busy streak as long as the note's (runnable, i.e.
            # running or waiting for a core: on a crowded host a miner that gets
            # little CPU is still contained within seconds; honest work shows no
            # such evidence at all)
            own = max(state.background_all.by_call.get(call, 0.0),
                      state.busy.by_call.get(call, 0.0))
            streak = min(s.background_busy_seconds, _EVIDENCE_BUSY_SECONDS)
            if own >= s.evidence_cpu_seconds or (
                    state.busy.runnable_of(call) >= streak and own >= _EVIDENCE_BUSY_CPU):
                where, reason = elsewhere
                return "detector.compute_with_mining_evidence", {
                    **self._figures(state, call), "limit": s.evidence_cpu_seconds,
                    "evidence": reason if where in (call, None) else f"{reason} (call {where})"}
        for rule, window, limit in (
                ("detector.background_compute", state.generous, s.background_kill_cpu_seconds),
                ("detector.compute_budget", state.budget, s.cpu_budget_seconds)):
            if window is None or limit is None or window.total < limit:
                continue
            # every call that made a real share of it is contained, each on its own
            # sample; a bystander (an idle dev server of another call) is not
            share = window.total * _MIN_SHARE
            figures = self._figures(state, call)
            for other, amount in window.by_call.items():
                if other != call and other not in state.fired and amount >= share:
                    state.condemned.setdefault(other, rule)
            if window.by_call.get(call, 0.0) >= share:
                return rule, figures
        if call in state.noted:
            return None, {}
        busy = state.busy
        if busy.runnable >= s.background_busy_seconds and busy.cpu >= s.background_busy_cpu_seconds \
                and busy.by_call.get(call, 0.0) >= busy.cpu * _MIN_SHARE:
            return _NOTED, {**self._figures(state, call), "busy": True}
        for window, limit in ((state.background, s.background_cpu_seconds),
                              (state.background_all, s.background_total_cpu_seconds)):
            if window.total >= limit and window.by_call.get(call, 0.0) >= window.total * _MIN_SHARE:
                return _NOTED, self._figures(state, call)
        return None, {}

    def _figures(self, state: _SessionCompute, call: str) -> dict[str, Any]:
        return {
            "busy_runnable_seconds": round(state.busy.runnable, 3),
            "busy_cpu_seconds": round(state.busy.cpu, 3),
            "call_background": round(state.background_all.by_call.get(call, 0.0), 3),
            "session_background": round(state.background_all.total, 3),
            "session_persistent_background": round(state.background.total, 3),
            "call_recent": round(state.recent.by_call.get(call, 0.0), 3),
            "session_budget_used": round(state.budget.total, 3) if state.budget else None,
            "session_background_long": round(state.generous.total, 3),
        }

    def _finding(self, rule: str, event: Event, figures: dict[str, Any],
                 event_ids: tuple[str, ...]) -> Finding:
        s = self._settings
        call = event.call_id
        pids = list(event.fields.get("res.bg_pids") or ())
        names = event.fields.get("res.bg_names") or ""
        tail = f" [{names}]" if names else ""
        severity = Severity.HIGH
        if rule == _NOTED:
            severity = Severity.LOW  # a background job is work until it shows more
            if figures.get("busy"):
                what = (f"stayed runnable (busy streaks of {figures['busy_runnable_seconds']:.2f}s, "
                        f"{figures['busy_cpu_seconds']:.2f} core-seconds)")
            else:
                what = (f"used {figures['session_background']:.2f} core-seconds within "
                        f"{s.background_window:g}s")
            message = (f"call {call}: processes that outlived or detached from the call, and "
                       f"that no running call talks to, {what} with no mining evidence: "
                       f"noted, killed only with evidence or past "
                       f"{s.background_kill_cpu_seconds:g} core-seconds within "
                       f"{s.background_kill_window:g}s{tail}")
        elif rule == "detector.background_compute":
            message = (f"call {call}: processes that outlived or detached from the call used "
                       f"{figures['session_background_long']:.1f} core-seconds within "
                       f"{s.background_kill_window:g}s (budget "
                       f"{s.background_kill_cpu_seconds:g}){tail}")
        elif rule == "detector.compute_budget":
            message = (f"call {call}: the session used {figures['session_budget_used']:.1f} "
                       f"core-seconds within {s.cpu_budget_window:g}s (budget "
                       f"{s.cpu_budget_seconds:g})")
        else:
            message = (f"call {call} computed {figures['call_recent']:.2f} core-seconds "
                       f"({figures['call_background']:.2f} in the background) with mining "
                       f"evidence ({figures.get('evidence')}){tail}")
        return Finding(
            rule_id=rule,
            severity=severity,
            message=message,
            categories=("mining", "resource_abuse"),
            mitre=("T1496",),
            evidence={**figures, "res.bg_pids": pids, "res.bg_names": names,
                      "call.returned": bool(event.fields.get("call.returned"))},
            event_ids=event_ids,
        )

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._state.pop(session_id, None)
        self._evidence.forget(session_id)


class ResourceLimitDetector:
    """The session hit a limit, by the kernel's own counters: it refused forks or
    threads (``pids.events``: a fork or thread bomb held by ``pids.max``), OOM-killed
    a process (memory), or the session's size-limited tmpfs is full (statfs: a disk
    bomb refused with ENOSPC). The call holding the most processes (memory, writes)
    is charged; for pids and memory its processes are killed so that the next call
    can run (for memory: when that call has returned, i.e. its processes are
    background). A fork bomb is abuse (high); filling the disk is recorded (medium,
    the limit already holds it); an OOM kill is reported and contained but not
    penalised (low): honest work can outgrow a limit."""

    name = "resource_limits"
    kinds = frozenset({EventKind.RESOURCE})

    def __init__(self) -> None:
        self._fired: set[tuple[str, str, str]] = set()  # (session, call, limit): once
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        limit = event.fields.get("res.limit")
        if limit is None:
            return []
        if event.call_id is not None:
            key = (event.session_id, event.call_id, str(limit))
            with self._lock:
                if key in self._fired:
                    return []
                self._fired.add(key)
        hits = int(event.fields.get("res.limit_hits") or 0)
        holder = event.call_id or "?"
        if limit == "pids":
            return [Finding(
                rule_id="detector.pids_limit",
                severity=Severity.HIGH,
                message=(f"the session hit its process limit ({hits} fork(s) refused): call "
                         f"{holder} holds {event.fields.get('res.call_pids', '?')} of "
                         f"{event.fields.get('res.pids', '?')} tasks (fork bomb)"),
                categories=("resource_abuse", "defense_evasion"),
                mitre=("T1499",),
                action=Action.KILL,
                evidence={"res.limit": limit, "res.limit_hits": hits,
                          "res.pids": event.fields.get("res.pids"),
                          "res.call_pids": event.fields.get("res.call_pids")},
            )]
        if limit == "disk":
            what = event.fields.get("res.disk_what")
            used = (f"{event.fields.get('res.disk_inodes')} of "
                    f"{event.fields.get('res.disk_limit_inodes')} files" if what == "inodes"
                    else f"{event.fields.get('res.disk_bytes')} of "
                    f"{event.fields.get('res.disk_limit_bytes')} bytes")
            return [Finding(
                rule_id="detector.disk_limit",
                severity=Severity.MEDIUM,
                message=(f"the session's files (workspace, /tmp, /var/tmp, /dev/shm) filled "
                         f"their size-limited filesystem ({used}); the kernel refuses further "
                         f"writes with ENOSPC; charged to call {holder}"),
                categories=("resource_abuse",),
                mitre=("T1499",),
                # the limit holds it: nothing to kill (honest work can outgrow a limit),
                # but the filling is recorded and reaches the trainer
                action=Action.ALERT,
                evidence={"res.limit": limit, "res.disk_what": what,
                          "res.disk_bytes": event.fields.get("res.disk_bytes"),
                          "res.disk_limit_bytes": event.fields.get("res.disk_limit_bytes"),
                          "res.disk_inodes": event.fields.get("res.disk_inodes"),
                          "res.disk_limit_inodes": event.fields.get("res.disk_limit_inodes")},
            )]
        if limit == "memory":
            return [Finding(
                rule_id="detector.memory_limit",
                severity=Severity.LOW,
                message=(f"the session hit its memory limit: the kernel killed {hits} "
                         f"process(es); call {holder} holds the most memory"),
                categories=("resource_abuse",),
                # background processes that outlived their call are killed so that the
                # next call has memory; a running call already had its process killed
                # by the kernel and reports it itself; nothing to blame: just record it
                action=Action.KILL if event.call_id and event.fields.get("call.returned")
                else Action.ALERT,
                evidence={"res.limit": limit, "res.limit_hits": hits,
                          "res.mem_bytes": event.fields.get("res.mem_bytes")},
            )]
        return []

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._fired = {k for k in self._fired if k[0] != session_id}


class ResourceRequestDetector:
    """A command asks for more storage or memory than the session's limits can hold
    (``engine/sizes.py``: ``fallocate -l 60G``, ``dd bs=1G count=100 of=f``, ``head -c
    50G /dev/zero > f``, ``bytearray(30 * 2**30)``). The kernel refuses such a request
    whole (ENOSPC, ENOMEM) before any counter moves, so the resource sensor never sees
    it: the request is the attempt. Charged to the command's call, once per call and
    kind. Medium (an alert) when it asks for at least twice the limit, a bomb's size;
    low when just past it (an honest guess at a size). A workspace the operator put on
    the host's disk (``sandbox.workspace``) is held by the same limit (an overlay whose
    upper layer is the session's tmpfs, ``sandbox/scratch.py``)."""

    name = "resource_requests"
    kinds = frozenset({EventKind.COMMAND})

    def __init__(self, limits: Any = None) -> None:
        self._memory: int | None = None
        self._disk: int | None = None
        if limits is not None:
            from ..sandbox.scratch import effective_size

            self._memory = int(limits.memory)
            self._disk = effective_size(int(limits.disk), int(limits.memory))
        self._fired: set[tuple[str, str | None, str]] = set()
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        if self._memory is None or self._disk is None:
            return []
        f = event.fields
        if not f.get("cmd.argv") and not f.get("cmd.interp_code"):
            return []
        found = command_requests(f.get("cmd.argv") or (), f.get("cmd.interp_code") or (),
                                 writes=bool(f.get("cmd.writes")))
        out: list[Finding] = []
        for request in found:
            limit = self._disk if request.kind == "disk" else self._memory
            if request.size <= limit:
                continue
            key = (event.session_id, event.call_id, request.kind)
            with self._lock:
                if key in self._fired:
                    continue
                self._fired.add(key)
            asked = ("more without end" if request.size == float("inf")
                     else _bytes(request.size))
            where = ("the session's writable filesystems" if request.kind == "disk"
                     else "the session's memory")
            out.append(Finding(
                rule_id="detector.resource_request",
                severity=Severity.MEDIUM if request.size >= 2 * limit else Severity.LOW,
                message=(f"`{request.what}` asks for {asked}; {where} may hold at most "
                         f"{_bytes(limit)}: a resource bomb (a size-limited filesystem or "
                         f"the memory limit refuses it whole)"),
                categories=("resource_abuse",),
                mitre=("T1499",),
                action=Action.ALERT,
                evidence={"request.kind": request.kind, "request.what": request.what,
                          "request.bytes": request.size if request.size != float("inf")
                          else None, "limit.bytes": limit},
            ))
        return out

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._fired = {k for k in self._fired if k[0] != session_id}


def _bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} bytes"


class GpuDetector:
    """GPU use in context: a call's foreground work may use the GPU (a training loop),
    and so may a process that outlived or detached from its call (``proc.background``:
    ``nohup python3 train.py &`` on a GPU box) until it shows mining evidence or the
    session's background GPU time passes ``gpu_background_kill_seconds``; before that
    it is a low note (``detector.gpu_background``, no action, no penalty).
    ``detector.gpu_unexpected`` (high, kill): a background process or a call with
    mining evidence (its own, or strong evidence anywhere in the session for a
    background process), or background GPU time past the budget. Names in
    ``expected_processes`` are never judged."""

    name = "gpu_unexpected"
    kinds = frozenset({EventKind.RESOURCE})

    def __init__(self, settings: DetectorSettings, evidence: MiningEvidence | None = None) -> None:
        self._util = settings.gpu_util_percent
        self._budget = settings.gpu_background_kill_seconds
        self._expected = _Expected(settings.expected_processes)
        self._evidence = evidence or MiningEvidence()
        self._fired: set[tuple[str, int]] = set()
        self._noted: set[tuple[str, int]] = set()
        self._seconds: dict[str, float] = {}  # session -> background GPU seconds
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
        background = bool(event.fields.get("proc.background"))
        evidence = self._evidence.of(event.session_id, event.call_id)
        if background and evidence is None:
            elsewhere = self._evidence.strong_in_session(event.session_id)
            if elsewhere is not None:
                evidence = (True, elsewhere[1] if elsewhere[0] in (event.call_id, None)
                            else f"{elsewhere[1]} (call {elsewhere[0]})")
        if not background and evidence is None:
            return []  # the call's own foreground work
        key = (event.session_id, event.pid)
        name = event.fields.get("proc.name") or "?"
        with self._lock:
            if key in self._fired:
                return []
            used = self._seconds.get(event.session_id, 0.0)
            if background:
                used += float(event.fields.get("res.interval") or 0.0)
                self._seconds[event.session_id] = used
            if evidence is None and used < self._budget:
                if key in self._noted:
                    return []
                self._noted.add(key)
                return [Finding(
                    rule_id="detector.gpu_background",
                    severity=Severity.LOW,  # a background training job is work
                    message=(f"process {name} (pid {event.pid}) uses the GPU ({util:.0f}% "
                             f"utilisation, {mem} bytes) after it outlived or detached from "
                             f"its call, with no mining evidence: noted, killed only with "
                             f"evidence or past {self._budget:g} GPU-seconds in the background"),
                    categories=("mining", "resource_abuse"),
                    mitre=("T1496",),
                    evidence={"res.gpu_util": util, "res.gpu_mem_bytes": mem,
                              "proc.name": name, "proc.background": True,
                              "session_background_gpu_seconds": round(used, 3)},
                )]
            self._fired.add(key)
        if evidence is not None:
            why = (("outlived or detached from its call and " if background else "")
                   + f"its session shows mining evidence ({evidence[1]})")
        else:
            why = (f"outlived or detached from its call, and the session's background GPU "
                   f"use reached {used:.0f} s (budget {self._budget:g})")
        return [Finding(
            rule_id="detector.gpu_unexpected",
            severity=Severity.HIGH,
            message=(f"process {name} (pid {event.pid}) uses the GPU ({util:.0f}% utilisation, "
                     f"{mem} bytes) and {why}"),
            categories=("mining", "resource_abuse"),
            mitre=("T1496",),
            evidence={"res.gpu_util": util, "res.gpu_mem_bytes": mem, "proc.name": name,
                      "proc.background": background,
                      "session_background_gpu_seconds": round(used, 3)},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._fired = {k for k in self._fired if k[0] != session_id}
            self._noted = {k for k in self._noted if k[0] != session_id}
            self._seconds.pop(session_id, None)


class ForkStormDetector:
    """More than ``fork_storm_per_second`` forks within one second *and* the processes
    pile up (at least half of them still alive): a fork bomb. A loop that forks a
    short-lived program per file (``for f in ...; do touch $f; done``) forks as fast
    but its children exit: that is work, not a storm. A bomb held by the pids limit is
    ``detector.pids_limit``'s."""

    name = "fork_storm"
    kinds = frozenset({EventKind.FORK, EventKind.EXIT})

    def __init__(self, settings: DetectorSettings) -> None:
        self._limit = settings.fork_storm_per_second
        self._windows: dict[str, deque[tuple[int, int]]] = {}  # (ts, +1 fork / -1 exit)
        self._counts: dict[str, list[int]] = {}  # [forks, net] in the window
        self._last_fired: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, event: Event) -> list[Finding]:
        now = event.ts
        step = 1 if event.kind is EventKind.FORK else -1
        with self._lock:
            window = self._windows.get(event.session_id)
            if window is None:
                window = self._windows[event.session_id] = deque()
                self._counts[event.session_id] = [0, 0]
            counts = self._counts[event.session_id]
            window.append((now, step))
            counts[0] += step > 0
            counts[1] += step
            while window and now - window[0][0] > _FORK_WINDOW_NS:
                _, old = window.popleft()
                counts[0] -= old > 0
                counts[1] -= old
            forks, net = counts
            if step < 0 or forks <= self._limit or net * 2 < forks:
                return []
            last = self._last_fired.get(event.session_id)
            if last is not None and now - last < _FORK_COOLDOWN_NS:
                return []
            self._last_fired[event.session_id] = now
        return [Finding(
            rule_id="detector.fork_storm",
            severity=Severity.HIGH,
            message=(f"{forks} processes forked within one second, {net} of them still alive "
                     f"(limit {self._limit}/s)"),
            categories=("resource_abuse", "defense_evasion"),
            mitre=("T1499",),
            evidence={"forks_per_second": forks, "alive": net},
        )]

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._windows.pop(session_id, None)
            self._counts.pop(session_id, None)
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
        if _own_address(ip, str(event.fields.get("net.src_ip") or "")):
            return []  # polling the session's own dev server is not a beacon
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
            # every connection judged here was allowed by the policy (refused ones are
            # skipped above and have verdicts of their own): a periodic poll of an
            # allowed host is how agents wait for a deploy, so it is recorded for the
            # trail and the operator, never a penalty on the episode
            severity=Severity.LOW,
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


def _own_address(dst: str, src: str) -> bool:
    """A destination inside the session itself: loopback, or its own address."""
    try:
        addr = ipaddress.ip_address(dst)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified or (bool(src) and dst == src)


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
                # the host's doing (load, a missing kernel feature), not the agent's:
                # recorded for the operator, never a penalty on the episode
                severity=Severity.LOW,
                message=f"the {sensor} sensor runs degraded ({reason})",
                categories=("monitor_tamper",),
                evidence={"sensor": sensor, "reason": reason},
            )]
        return []

    def forget(self, session_id: str) -> None:
        return None


def _network_detectors() -> list[Detector]:
    from ..gateway.detectors import network_detectors as found

    return found()


network_detectors = _network_detectors


def default_detectors(settings: DetectorSettings, *,
                      cap_cores: float | None = None, limits: Any = None) -> list[Detector]:
    """The detectors every engine runs, in evaluation order. ``cap_cores`` (the
    session's CPU limit) is accepted for compatibility: budgets are in core-seconds
    of CPU used, which no CPU limit can make unreachable. ``limits`` (the policy's
    ``sandbox.limits``) lets requests past them be judged (``ResourceRequestDetector``);
    without it they are not."""
    evidence = MiningEvidence()
    return [
        TelemetryLossDetector(),
        ComputeDetector(settings, evidence),
        GpuDetector(settings, evidence),
        ResourceLimitDetector(),
        ResourceRequestDetector(limits),
        ForkStormDetector(settings),
        ConnectionDetector(settings),
        *network_detectors(),  # the gateway's: scans, DNS exfiltration, stream cuts
    ]
