"""Operator actions: freeze, thaw, terminate, quarantine an episode, switch its
network phase, each recorded in the run's audit trail as an operator action.

Every attempt is recorded, refused ones included (``operator.stage`` = ``refused``),
with the principal's label and the client address. An accepted request is recorded
*before* anything is done (``requested``, durable), and its outcome after (``done``,
``failed`` or ``not carried out``), so the trail reads request → lifecycle change →
outcome, the way it reads command → verdict → action for the responder.

The server can only act on sessions it holds a handle to: a ``SessionControl``
supplied by the process that owns them (``LocalSessions`` for sessions in the same
process, e.g. a demo or a trainer that embeds the server). A standalone server over a
state directory has none: it records the request and answers 501, because sessions
in another process cannot be reached until the per-node daemon exists.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ..audit.trail import AuditTrail, lease_trail, release_trail
from ..events import Event, EventKind
from ..state import StateDir

__all__ = [
    "OPERATOR_ACTIONS",
    "ActionOutcome",
    "LocalSessions",
    "NoHandle",
    "Recorder",
    "RefusalLimiter",
    "SessionControl",
    "record_operator_action",
]

OPERATOR_ACTIONS = ("freeze", "thaw", "terminate", "quarantine", "network_phase")


class NoHandle(Exception):
    """This process holds no live session for the episode (answered 409), or cannot
    do this action to the sessions it holds (answered 501)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class SessionControl(Protocol):
    """Acts on the live sessions of an episode. Raises NoHandle when it cannot."""

    def act(self, episode_id: str, action: str, *, reason: str, phase: str | None) -> str:
        """Carry the action out; return one line saying what was done."""
        ...


class LocalSessions:
    """Sessions of this process, registered by their owner (``register(session)``),
    acted on through their public methods."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, list[Any]] = {}

    def register(self, session: Any) -> None:
        with self._lock:
            self._sessions.setdefault(session.episode_id, []).append(session)

    def unregister(self, session: Any) -> None:
        with self._lock:
            found = self._sessions.get(session.episode_id, [])
            if session in found:
                found.remove(session)

    def act(self, episode_id: str, action: str, *, reason: str, phase: str | None) -> str:
        with self._lock:
            sessions = [s for s in self._sessions.get(episode_id, []) if not s.closed]
        if not sessions:
            raise NoHandle(f"no live session of episode {episode_id} in this process")
        done = []
        for session in sessions:
            if action == "freeze":
                session.freeze()
            elif action == "thaw":
                session.thaw()
            elif action == "terminate":
                session.terminate(reason)
            elif action == "network_phase":
                if not phase:
                    raise ValueError("network_phase needs a phase")
                session.set_network_phase(phase)
            else:
                raise NoHandle(f"{action} is not available through a session's public "
                               "interface", status=501)
            done.append(session.session_id)
        return f"{action} applied to session(s) {', '.join(done)}"


class RefusalLimiter:
    """Refused attempts come from clients without the admin token, possibly without
    any token: recording every one would let anyone who can reach the port fill the
    audit trail (one fsync each). Each client address gets ``burst`` recorded refusals,
    refilled at ``per_minute``; the rest are counted and the count goes into that
    client's next recorded refusal."""

    def __init__(self, burst: int = 20, per_minute: float = 20.0) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float, int]] = {}  # tokens, at, suppressed

    def admit(self, client: str, now: float) -> tuple[bool, int]:
        """(record this one?, how many were suppressed before it)."""
        with self._lock:
            tokens, at, suppressed = self._buckets.get(client, (float(self.burst), now, 0))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now, suppressed + 1)
                return False, 0
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            self._buckets[client] = (tokens - 1.0, now, 0)
            return True, suppressed


@dataclass(frozen=True)
class ActionOutcome:
    status: int  # HTTP status to answer
    stage: str  # refused, done, failed, not carried out
    detail: str
    seq: int  # position of the outcome record in the run's log


class Recorder:
    """The trails this server appends operator actions to: leased on first use per
    run and kept until ``close()`` (one writer per run, one fsync per record)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._trails: dict[str, AuditTrail] = {}

    def trail(self, run_id: str) -> AuditTrail:
        with self._lock:
            trail = self._trails.get(run_id)
            if trail is not None and trail.failed is None:
                return trail
            if trail is not None:
                self._trails.pop(run_id)
                release_trail(trail)
            trail = self._trails[run_id] = lease_trail(self.state.root, run_id)
            return trail

    def close(self) -> None:
        with self._lock:
            trails, self._trails = list(self._trails.values()), {}
        for trail in trails:
            release_trail(trail)


def record_operator_action(recorder: Recorder, *, run_id: str, episode_id: str,
                           session_id: str, action: str, stage: str, ok: bool, detail: str,
                           principal: str, client: str, reason: str = "",
                           phase: str | None = None) -> int:
    """Append one operator-action record to the run's trail and wait until it is
    durable; returns its position. Raises AuditError (the caller must not act)."""
    fields: dict[str, Any] = {
        "action.name": f"operator.{action}", "action.target": episode_id,
        "action.rule": "operator", "action.ok": ok, "action.detail": detail,
        "operator.stage": stage, "operator.principal": principal,
        "operator.client": client, "operator.reason": reason,
    }
    if phase is not None:
        fields["operator.phase"] = phase
    event = Event(EventKind.ACTION, session_id=session_id, run_id=run_id,
                  episode_id=episode_id, fields=fields)
    trail = recorder.trail(run_id)
    ticket = trail.submit_event(event)
    trail.flush()
    return ticket.wait()
