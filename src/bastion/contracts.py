"""The contracts between a session and the parts that serve it (internal).

This module is a leaf: it imports only ``events`` and plain types, so sensors, the
gateway, the engine and the responder can depend on it without depending on
``Session`` (a layer test enforces that none of them imports ``bastion.session``).

- ``Watched``: what a session shows its observers, read-only (ids, policy, workspace,
  cgroup, call lookup, state). Every lookup is made under the session's lock.
- ``EventSink``: the only way into a session. ``submit`` queues an event for the
  session's serial pipeline and returns at once; ``contain`` stops the session when it
  can no longer be watched. Neither waits for the pipeline.
- ``EventRecorder``, ``Evaluator``, ``ResponsePlanner``: the three replaceable stages
  of the pipeline (audit, engine, responder), complete: no optional methods.
- Commands: what a planner returns for a verdict (``Refuse``, ``KillCall``, ...). The
  session carries them out, after the verdict is durable; a command that cannot be
  carried out is replaced by its ``otherwise`` (always towards more containment).

Fakes of ``Watched`` and ``EventSink`` ship beside these contracts in
``bastion.testing``.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .events import Action, Event, EventKind, Verdict

if TYPE_CHECKING:  # types only: the policy and sandbox packages are leaves as well
    from .policy import Policy
    from .sandbox.cgroups import SessionCgroup

__all__ = [
    "Alert",
    "CallRef",
    "Command",
    "Cut",
    "Evaluator",
    "EventRecorder",
    "EventSink",
    "Freeze",
    "KillCall",
    "KillSocketOwner",
    "KillTree",
    "Quarantine",
    "Refuse",
    "ResponsePlanner",
    "SessionObserver",
    "SessionState",
    "Terminate",
    "Watched",
    "make_event",
]


@dataclass(frozen=True, slots=True)
class CallRef:
    """One tool call, as observers may name it."""

    call_id: str
    step: int | None


class SessionState(str, enum.Enum):
    """Where a session stands, as an observer may act on it."""

    OPEN = "open"
    FROZEN = "frozen"
    ENDED = "ended"  # terminated or broken: refuses further calls, not yet closed
    CLOSED = "closed"

    @property
    def stopped(self) -> bool:
        """Nothing of the session runs or will run (ended or closed)."""
        return self in (SessionState.ENDED, SessionState.CLOSED)


class Watched(Protocol):
    """A read-only view of one session for its observers and its response planner."""

    @property
    def session_id(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def episode_id(self) -> str: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def workspace(self) -> Path: ...

    @property
    def cgroup(self) -> SessionCgroup | None:
        """The session's cgroup tree (None before the sandbox exists)."""
        ...

    @property
    def state(self) -> SessionState: ...

    def call_for_cgroup(self, cgroup_path: str) -> CallRef | None:
        """The call a process belongs to, from its (v2) cgroup path."""
        ...

    def call_by_host_pid(self, pid: int) -> CallRef | None:
        """The call whose first process has this host pid."""
        ...

    def latest_call(self) -> CallRef | None: ...

    def call_pending(self, call_id: str) -> bool:
        """True for a call that was asked for but whose process has not started:
        refusing it is the only kill that leaves nothing behind."""
        ...

    def owns_cgroup(self, cgroup_path: str) -> bool: ...


def make_event(view: Watched, kind: EventKind, *, call: CallRef | None = None,
               pid: int | None = None, **fields: Any) -> Event:
    """An Event attributed to ``view``'s session (and to ``call`` if given)."""
    return Event(kind=kind, session_id=view.session_id, run_id=view.run_id,
                 episode_id=view.episode_id, step=call.step if call else None,
                 call_id=call.call_id if call else None, pid=pid, fields=fields)


class EventSink(Protocol):
    """The way into a session. Safe from any thread; never waits for the pipeline."""

    def submit(self, event: Event) -> Future[list[Verdict]]:
        """Queue ``event`` for the session's pipeline. The future resolves to the
        verdicts it drew (with the actions taken), or fails if the session could not
        take it (closed, or the pipeline failed closed): treat that as refused."""
        ...

    def contain(self, reason: str) -> None:
        """The session can no longer be watched (a sensor failed): end it now, without
        waiting for the pipeline, and record why."""
        ...


class SessionObserver(Protocol):
    """A host-wide part that follows every session (sensor, sampler)."""

    def register(self, view: Watched, sink: EventSink) -> None: ...

    def unregister(self, view: Watched) -> None: ...


class EventRecorder(Protocol):
    """The audit trail as the session sees it. Appends may be queued; ``flush``
    returns once everything appended so far is durable. Raising from any method stops
    the session: an event that cannot be recorded must not be acted upon."""

    def append_policy(self, policy: Policy, *, episode_id: str) -> object: ...

    def append_event(self, event: Event) -> object: ...

    def append_verdict(self, verdict: Verdict) -> object: ...

    def flush(self, *, checkpoint: bool = False) -> None: ...


class Evaluator(Protocol):
    """Rules and detectors: Events in, Verdicts out. Never acts."""

    @property
    def policy_hash(self) -> str: ...

    def evaluate(self, event: Event) -> list[Verdict]: ...


class ResponsePlanner(Protocol):
    """What a verdict calls for, as commands. Pure: never acts, never detects."""

    def plan(self, verdict: Verdict, event: Event, view: Watched) -> list[Command]: ...


# -- commands -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Command:
    """Base of every command: ``action`` is what carrying it out counts as, and
    ``otherwise`` the (stronger) command to carry out when this one cannot be."""

    otherwise: Command | None = field(default=None, kw_only=True)
    action: ClassVar[Action] = Action.NONE


@dataclass(frozen=True, slots=True)
class Terminate(_Command):
    """End the episode: kill everything, refuse further calls."""

    reason: str
    action: ClassVar[Action] = Action.TERMINATE


@dataclass(frozen=True, slots=True)
class Refuse(_Command):
    """Do not let it happen: a command not yet run, a connection or query the gateway
    holds until its verdict is back. The refusal itself is made by whoever waits for
    the verdict (``Session.exec``, the gateway); executing it records it."""

    reason: str
    action: ClassVar[Action] = Action.DENY


@dataclass(frozen=True, slots=True)
class Alert(_Command):
    """Record (and send to the policy's webhook, if any); nothing is stopped."""

    action: ClassVar[Action] = Action.ALERT


@dataclass(frozen=True, slots=True)
class KillTree(_Command):
    """SIGKILL a process and its descendants inside the session (pid-reuse safe). A
    process already gone is not a failure."""

    pid: int
    action: ClassVar[Action] = Action.KILL


@dataclass(frozen=True, slots=True)
class KillCall(_Command):
    """Kill every process charged to one call (its cgroup), background ones too."""

    call_id: str
    action: ClassVar[Action] = Action.KILL


@dataclass(frozen=True, slots=True)
class KillSocketOwner(_Command):
    """Kill the session process holding a connection's socket (and its call): for a
    connection verdict the gateway could not charge to a process."""

    src_ip: str
    src_port: int
    action: ClassVar[Action] = Action.KILL


@dataclass(frozen=True, slots=True)
class Cut(_Command):
    """Close one live connection at the gateway."""

    conn_id: str
    action: ClassVar[Action] = Action.CUT


@dataclass(frozen=True, slots=True)
class Freeze(_Command):
    """Stop every process of the session where it stands (cgroup freezer)."""

    action: ClassVar[Action] = Action.FREEZE


@dataclass(frozen=True, slots=True)
class Quarantine(_Command):
    """Freeze, keep the evidence (process list, workspace copy), then terminate."""

    reason: str
    action: ClassVar[Action] = Action.QUARANTINE


Command = (Terminate | Refuse | Alert | KillTree | KillCall | KillSocketOwner | Cut | Freeze
           | Quarantine)

# Commands that change what runs: carried out only once their verdict is durable.
DESTRUCTIVE: tuple[type, ...] = (Terminate, KillTree, KillCall, KillSocketOwner, Cut, Freeze,
                                 Quarantine)

