"""Fakes shipped with the contracts, and the conformance suite of ``EventRecorder``.

``FakeWatched`` and ``RecordingSink`` let a sensor, the gateway or a response planner
be tested without a session, a sandbox or root, the way httpx's ``MockTransport``
lets a client be tested without a network::

    view = FakeWatched(calls=[CallRef("c3", 3)], pending={"c3"})
    assert Responder(policy.response).plan(verdict, event, view) == [Refuse(...)]

``check_recorder(make)`` runs the same order / flush / durability / failure checks
against any ``EventRecorder`` (the audit trail, the cluster's shipping recorder,
``MemoryRecorder``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contracts import CallRef, EventRecorder, SessionState
from .events import Event, EventKind, Severity, Verdict

if TYPE_CHECKING:
    from .policy import Policy
    from .sandbox.cgroups import SessionCgroup

__all__ = ["FakeWatched", "MemoryRecorder", "RecordingSink", "check_recorder"]


@dataclass
class FakeWatched:
    """A ``Watched`` with fixed answers. ``cgroups`` maps a call cgroup's name
    (``call-1``) to its call; ``pending`` holds the ids of calls not yet started."""

    session_id: str = "s-fake"
    run_id: str = "r-fake"
    episode_id: str = "e-fake"
    policy: Policy | None = None  # type: ignore[assignment]
    workspace: Path = Path("/nonexistent/workspace")
    cgroup: SessionCgroup | None = None
    state: SessionState = SessionState.OPEN
    calls: list[CallRef] = field(default_factory=list)
    cgroups: dict[str, CallRef] = field(default_factory=dict)
    host_pids: dict[int, CallRef] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.policy is None:
            from .policy import Policy

            self.policy = Policy.default()

    def call_for_cgroup(self, cgroup_path: str) -> CallRef | None:
        if not self.owns_cgroup(cgroup_path):
            return None
        return self.cgroups.get(cgroup_path.rstrip("/").rsplit("/", 1)[-1])

    def call_by_host_pid(self, pid: int) -> CallRef | None:
        return self.host_pids.get(pid)

    def latest_call(self) -> CallRef | None:
        return self.calls[-1] if self.calls else None

    def call_pending(self, call_id: str) -> bool:
        return call_id in self.pending

    def owns_cgroup(self, cgroup_path: str) -> bool:
        return f"/{self.session_id}/" in cgroup_path or cgroup_path.endswith(
            f"/{self.session_id}")


class RecordingSink:
    """An ``EventSink`` that keeps what it was given. ``verdicts`` (a function of the
    event) decides what each submitted event's future resolves to."""

    def __init__(self, verdicts: Callable[[Event], list[Verdict]] | None = None) -> None:
        self.events: list[Event] = []
        self.contained: list[str] = []
        self._verdicts = verdicts or (lambda event: [])
        self._lock = threading.Lock()

    def submit(self, event: Event) -> Future[list[Verdict]]:
        with self._lock:
            self.events.append(event)
        future: Future[list[Verdict]] = Future()
        future.set_result(self._verdicts(event))
        return future

    def contain(self, reason: str) -> None:
        with self._lock:
            self.contained.append(reason)

    def of_kind(self, kind: EventKind) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind is kind]


class MemoryRecorder:
    """An ``EventRecorder`` in memory: ``records`` is everything appended, in order;
    ``durable`` the prefix that a ``flush`` made durable. ``fail`` makes every later
    call raise (a disk that filled up)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []
        self.durable = 0
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def _append(self, kind: str, value: Any) -> int:
        with self._lock:
            if self.fail is not None:
                raise self.fail
            self.records.append((kind, value))
            return len(self.records)

    def append_policy(self, policy: Policy, *, episode_id: str) -> object:
        return self._append("policy", (policy.hash, episode_id))

    def append_event(self, event: Event) -> object:
        return self._append("event", event)

    def append_verdict(self, verdict: Verdict) -> object:
        return self._append("verdict", verdict)

    def flush(self, *, checkpoint: bool = False) -> None:
        with self._lock:
            if self.fail is not None:
                raise self.fail
            self.durable = len(self.records)


# -- conformance ----------------------------------------------------------------------


@dataclass
class RecorderProbe:
    """One recorder under test. ``read`` returns the ids of the events and verdicts
    recorded so far, in order; ``durable_ids`` those that would survive a crash now;
    ``break_it`` makes every later append or flush fail."""

    recorder: EventRecorder
    read: Callable[[], Sequence[str]]
    durable_ids: Callable[[], Iterable[str]]
    break_it: Callable[[], None]
    close: Callable[[], None] = lambda: None


def check_recorder(make: Callable[[], RecorderProbe]) -> None:
    """Assert the ``EventRecorder`` contract: records keep their order, ``flush``
    makes everything appended before it durable (also with ``checkpoint=True``), and
    a recorder that can no longer record raises (from the append or, at the latest,
    from the next flush) instead of losing records silently."""
    from .policy import Policy

    probe = make()
    try:
        recorder = probe.recorder
        recorder.append_policy(Policy.default(), episode_id="e1")
        events = [Event(kind=EventKind.LIFECYCLE, session_id="s1", run_id="r1",
                        episode_id="e1", fields={"life.state": f"n{i}"}) for i in range(20)]
        verdict = Verdict(rule_id="t.rule", severity=Severity.HIGH, message="m",
                          session_id="s1", run_id="r1", episode_id="e1",
                          event_ids=(events[9].id,))
        for event in events[:10]:
            recorder.append_event(event)
        recorder.append_verdict(verdict)
        for event in events[10:]:
            recorder.append_event(event)
        recorder.flush()
        expected = [e.id for e in events[:10]] + [verdict.id] + [e.id for e in events[10:]]
        got = [i for i in probe.read() if i in set(expected)]
        assert got == expected, f"records out of order or missing: {got} != {expected}"
        durable = set(probe.durable_ids())
        assert set(expected) <= durable, "flush returned before the records were durable"
        late = Event(kind=EventKind.LIFECYCLE, session_id="s1", run_id="r1", episode_id="e1",
                     fields={"life.state": "closing"})
        recorder.append_event(late)
        recorder.flush(checkpoint=True)
        assert late.id in set(probe.durable_ids()), "a checkpoint flush lost a record"
        probe.break_it()
        lost = Event(kind=EventKind.LIFECYCLE, session_id="s1", run_id="r1", episode_id="e1",
                     fields={"life.state": "lost"})
        raised = False
        try:
            recorder.append_event(lost)
            recorder.flush()
        except Exception:  # noqa: BLE001 - any error is the contract; silence is not
            raised = True
        assert raised, "a recorder that cannot record must raise, not drop the record"
    finally:
        probe.close()
