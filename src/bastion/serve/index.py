"""What the server knows: every run's audit trail, tailed by position, folded into an
in-memory picture of runs, sessions, episodes, calls, verdicts, actions and counters.

The audit trail is the only source. Every session of every process on the node writes
its run's SQLite log (``<state>/audit/<run>.db``, WAL mode), so a reader that remembers
the last position it read of each log and asks for ``seq >= next`` sees new records of
live sessions in any process, in order, as soon as they are durable, without any hook
into the writers. Sessions, calls and their states are derived from lifecycle records
(``created``, ``call_start``, ``call_end``, ``frozen``, ``terminated``, ``closing``, ...),
so what the dashboard, the API and ``/metrics`` say can always be checked against
``bastion audit export``.

Events (the bulky part) are not kept: they are counted as they pass and read back from
SQLite on request. Verdicts, actions, calls and sessions are kept (they are few).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit.errors import AuditError
from ..audit.reader import Record, RunLog
from ..audit.store import list_run_dbs
from ..events import Severity
from ..state import StateDir

__all__ = ["CallInfo", "Index", "IndexStatistics", "SessionInfo", "severity_rank"]

# lifecycle state -> session state
_STATE_OF = {
    "created": "live", "frozen": "frozen", "thawed": "live", "terminated": "terminated",
    "closing": "closed", "closed": "closed",
}
_OPEN_STATES = ("live", "frozen")


def severity_rank(name: str | None) -> int:
    """Rank of a severity name (unknown or None: -1), for "at least" filters."""
    if not name:
        return -1
    try:
        return int(Severity.parse(name))
    except ValueError:
        return -1


@dataclass
class SessionInfo:
    session_id: str
    run_id: str
    episode_id: str
    created: float
    policy: str = ""
    policy_hash: str = ""
    state: str = "live"
    reason: str | None = None
    network_phase: str | None = None
    last_wall: float = 0.0
    calls: int = 0
    verdicts: int = 0
    worst: int = -1  # highest severity rank seen
    quarantined: bool = False


@dataclass
class CallInfo:
    run_id: str
    episode_id: str
    session_id: str
    call_id: str
    step: int | None
    command: str = ""
    start: float | None = None
    end: float | None = None
    outcome: str | None = None
    exit_code: int | None = None
    verdicts: int = 0
    worst: int = -1


@dataclass
class IndexStatistics:
    runs: int
    records: int  # read by this index
    polls: int
    last_poll_seconds: float


@dataclass
class _RunState:
    log: RunLog
    path: Path
    next_seq: int = 0
    last_wall: float = 0.0


@dataclass
class Counters:
    """Everything ``/metrics`` reports that is a count over the trail."""

    records: Counter[str] = field(default_factory=Counter)  # by record type
    events: Counter[str] = field(default_factory=Counter)  # by event kind (all event records)
    sessions_created: Counter[str] = field(default_factory=Counter)  # by run
    calls_started: Counter[str] = field(default_factory=Counter)  # by run
    calls_ended: Counter[tuple[str, str]] = field(default_factory=Counter)  # (run, outcome)
    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (severity, action)
    categories: Counter[tuple[str, str]] = field(default_factory=Counter)  # (category, sev)
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (name, ok)
    connections: Counter[str] = field(default_factory=Counter)  # by decision
    bytes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (decision, direction)
    dns: Counter[tuple[str, str]] = field(default_factory=Counter)  # (decision, rcode)
    dropped_packets: Counter[str] = field(default_factory=Counter)  # by proto
    telemetry: Counter[tuple[str, str]] = field(default_factory=Counter)  # (sensor, what)


class Index:
    """Thread-safe. ``poll()`` reads what is new in every log (from one thread at a
    time) and returns the verdict and action records it found, for live streams."""

    def __init__(self, state_dir: str | Path | None) -> None:
        self.state = StateDir.resolve(state_dir)
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._runs: dict[Path, _RunState] = {}
        self._run_ids: dict[str, Path] = {}
        self.sessions: dict[str, SessionInfo] = {}
        self.calls: dict[tuple[str, str], CallInfo] = {}  # (session, call)
        self.verdicts: list[Record] = []
        self.actions: list[Record] = []
        self.policies: list[Record] = []
        self.counters = Counters()
        self._records = 0
        self.version = 0  # bumped whenever a poll applied records (for memoised views)
        # bumped when a new run log appears or an episode ends (its records are then
        # covered by a checkpoint): moments worth a fresh verify
        self.milestones = 0
        self._polls = 0
        self._last_poll = 0.0
        # called with (seconds from a record's wall time to now) for records read after
        # the first poll (the backlog read at start-up is not lag)
        self.lag_observer: Callable[[float], None] | None = None

    # -- reading the logs -------------------------------------------------------------

    def close(self) -> None:
        with self._poll_lock, self._lock:
            for run in self._runs.values():
                run.log.close()
            self._runs.clear()

    def _discover(self) -> None:
        for path in list_run_dbs(self.state.audit):
            if path in self._runs:
                continue
            try:
                log = RunLog(path)
            except AuditError:
                continue  # not initialised yet (its writer is inside its first transaction)
            if not log.public_key:
                log.close()
                continue
            with self._lock:
                self._runs[path] = _RunState(log, path)
                self._run_ids[log.run_id] = path
                self.milestones += 1

    def poll(self) -> list[Record]:
        """Read every record appended since the last poll; return the new verdicts and
        actions (in log order per run). Raises AuditError if a log cannot be read."""
        started = time.perf_counter()
        fresh: list[Record] = []
        with self._poll_lock:
            observe = self.lag_observer if self._polls else None
            self._discover()
            for run in list(self._runs.values()):
                batch = list(run.log.records(start=run.next_seq))
                if not batch:
                    continue
                if observe is not None:
                    now = time.time()
                    for record in batch:
                        if record.wall:
                            observe(now - record.wall)
                with self._lock:
                    for record in batch:
                        self._apply(record)
                        if record.type in ("verdict", "action"):
                            fresh.append(record)
                    run.next_seq = batch[-1].seq + 1
                    run.last_wall = max(run.last_wall, max(r.wall for r in batch))
                    self._records += len(batch)
                    self.version += 1
            with self._lock:
                self._polls += 1
                self._last_poll = time.perf_counter() - started
        return fresh

    def _apply(self, record: Record) -> None:
        c = self.counters
        c.records[record.type] += 1
        data = record.data
        if record.type == "verdict":
            self.verdicts.append(record)
            severity = str(data.get("severity", "?"))
            c.verdicts[(severity, str(data.get("action", "none")))] += 1
            for category in data.get("categories") or ["uncategorised"]:
                c.categories[(str(category), severity)] += 1
            rank = severity_rank(severity)
            session = self.sessions.get(str(data.get("session_id") or ""))
            if session is not None:
                session.verdicts += 1
                session.worst = max(session.worst, rank)
            call = self.calls.get((str(data.get("session_id") or ""), str(data.get("call_id"))))
            if call is not None:
                call.verdicts += 1
                call.worst = max(call.worst, rank)
            return
        if record.type == "policy":
            self.policies.append(record)
            return
        if not record.is_event:
            return
        kind = str(data.get("kind", "?"))
        c.events[kind] += 1
        fields: dict[str, Any] = data.get("fields") or {}
        sid = str(data.get("session_id") or "")
        session = self.sessions.get(sid)
        if session is not None:
            session.last_wall = max(session.last_wall, record.wall)
        if kind == "lifecycle":
            self._lifecycle(record, fields, session)
        elif kind == "action":
            self.actions.append(record)
            name = str(fields.get("action.name", "?"))
            c.actions[(name, str(fields.get("action.ok", "")).lower())] += 1
            if name == "quarantine" and session is not None and fields.get("action.ok"):
                session.quarantined = True
        elif kind == "net.connect":
            c.connections[str(fields.get("net.decision") or "unknown")] += 1
        elif kind == "net.close":
            decision = str(fields.get("net.decision") or "unknown")
            c.bytes[(decision, "out")] += int(fields.get("net.bytes_out") or 0)
            c.bytes[(decision, "in")] += int(fields.get("net.bytes_in") or 0)
        elif kind == "net.drop":
            c.dropped_packets[str(fields.get("net.proto") or "?")] += int(
                fields.get("net.packets") or 0)
        elif kind == "dns.query":
            c.dns[(str(fields.get("dns.decision") or "unknown"),
                   str(fields.get("dns.rcode") or "?"))] += 1
        elif kind == "telemetry":
            sensor = str(fields.get("telemetry.sensor") or "?")
            what = ("loss" if fields.get("telemetry.loss") else
                    "gap" if fields.get("telemetry.gap") else "notice")
            c.telemetry[(sensor, what)] += 1

    def _lifecycle(self, record: Record, fields: dict[str, Any],
                   session: SessionInfo | None) -> None:
        data = record.data
        state = str(fields.get("life.state", ""))
        sid = str(data.get("session_id") or "")
        run_id = str(data.get("run_id") or record.run_id)
        if state == "created":
            session = self.sessions[sid] = SessionInfo(
                sid, run_id, str(data.get("episode_id") or ""), record.wall,
                policy=str(fields.get("policy", "")),
                policy_hash=str(fields.get("policy_hash", "")), last_wall=record.wall)
            self.counters.sessions_created[run_id] += 1
            return
        if session is None:  # a session created before this log started (another run)
            session = self.sessions[sid] = SessionInfo(
                sid, run_id, str(data.get("episode_id") or ""), record.wall,
                last_wall=record.wall)
        if state in _STATE_OF:
            new = _STATE_OF[state]
            if new in ("closed", "terminated"):
                self.milestones += 1
            # a terminated session stays terminated through its closing
            if not (session.state == "terminated" and new == "closed"):
                session.state = new
            if fields.get("reason"):
                session.reason = str(fields["reason"])
        elif state == "network_phase":
            session.network_phase = str(fields.get("phase", ""))
        elif state == "call_start":
            call_id = str(data.get("call_id") or "")
            self.calls[(sid, call_id)] = CallInfo(
                run_id, session.episode_id, sid, call_id, data.get("step"),
                command=str(fields.get("cmd.raw", "")), start=record.wall)
            session.calls += 1
            self.counters.calls_started[run_id] += 1
        elif state == "call_end":
            call_id = str(data.get("call_id") or "")
            call = self.calls.get((sid, call_id))
            if call is None:
                call = self.calls[(sid, call_id)] = CallInfo(
                    run_id, session.episode_id, sid, call_id, data.get("step"))
            call.end = record.wall
            call.outcome = str(fields.get("outcome", "")) or None
            code = fields.get("proc.exit_code")
            call.exit_code = int(code) if isinstance(code, int) else None
            self.counters.calls_ended[(run_id, call.outcome or "unknown")] += 1

    # -- questions -----------------------------------------------------------------

    def session_state(self, session: SessionInfo) -> str:
        """The recorded state, or ``lost`` for a session that never recorded its end
        and whose directory is gone (its process died without closing it)."""
        if session.quarantined:
            return "quarantined"
        if session.state in _OPEN_STATES and not (self.state.sessions / session.session_id
                                                  ).exists():
            return "lost"
        return session.state

    def run_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._run_ids)

    def run_path(self, run_id: str) -> Path | None:
        with self._lock:
            return self._run_ids.get(run_id)

    def run_sizes(self) -> dict[str, tuple[int, float]]:
        """run -> (records read, wall time of the newest record)."""
        with self._lock:
            return {r.log.run_id: (r.next_seq, r.last_wall) for r in self._runs.values()}

    def snapshot_sessions(self) -> list[SessionInfo]:
        with self._lock:
            return [SessionInfo(**vars(s)) for s in self.sessions.values()]

    def snapshot_calls(self) -> list[CallInfo]:
        with self._lock:
            return [CallInfo(**vars(c)) for c in self.calls.values()]

    def snapshot_verdicts(self) -> list[Record]:
        with self._lock:
            return list(self.verdicts)

    def snapshot_actions(self) -> list[Record]:
        with self._lock:
            return list(self.actions)

    def snapshot_policies(self) -> list[Record]:
        with self._lock:
            return list(self.policies)

    def snapshot_counters(self) -> Counters:
        with self._lock:
            c = self.counters
            return Counters(*(Counter(getattr(c, f)) for f in Counters.__dataclass_fields__))

    def statistics(self) -> IndexStatistics:
        with self._lock:
            return IndexStatistics(len(self._runs), self._records, self._polls, self._last_poll)

    def events(self, *, run: str | None = None, episode: str | None = None,
               after: int = -1) -> Iterator[Record]:
        """Event records (events, lifecycle, actions) read back from SQLite, in log
        order per run, runs in name order. Opens its own read connection per run, so
        it may run on any thread."""
        for run_id in self.run_ids():
            if run is not None and run != run_id:
                continue
            path = self.run_path(run_id)
            if path is None:
                continue
            with RunLog(path) as log:
                if episode is not None:
                    yield from (r for r in log.episode(episode) if r.is_event and r.seq > after)
                else:
                    yield from log.records(types=("event", "lifecycle", "action"),
                                           start=after + 1)
