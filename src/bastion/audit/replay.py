"""Replay: re-run an episode's recorded tool calls in a fresh session and compare the
verdicts, call by call. Under the recorded policy this checks that a detection is
reproducible; with ``policy=`` it answers "what would this policy change have done
to last week's episodes?" before the change ships.

The tool calls come from the ``call_start`` lifecycle records (``cmd.raw``, step,
call id), in log order; the recorded policy is the policy record whose hash the
session's ``created`` record names. Calls are compared as multisets of
``(rule, action)``; the outcome (ok, denied, killed, ...) is reported beside them.
A call's stdin is not recorded, so calls that depended on it (``write_file``) run
without it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..contracts import Evaluator, EventRecorder
from ..errors import SessionBroken
from ..events import Action, Verdict
from ..policy import Policy
from ..session import Session
from .errors import AuditError
from .reader import Record, episode_records

__all__ = ["CallDiff", "RecordedCall", "ReplayResult", "recorded_calls", "replay_episode"]


@dataclass(frozen=True)
class RecordedCall:
    step: int | None
    call_id: str
    command: str
    outcome: str | None
    verdicts: tuple[Verdict, ...]


@dataclass(frozen=True)
class CallDiff:
    step: int | None
    call_id: str
    command: str
    recorded: tuple[tuple[str, str], ...]  # (rule_id, action), sorted
    replayed: tuple[tuple[str, str], ...]
    recorded_outcome: str | None
    replayed_outcome: str | None

    @property
    def differs(self) -> bool:
        return Counter(self.recorded) != Counter(self.replayed)


@dataclass
class ReplayResult:
    episode_id: str
    recorded_policy: str | None
    replay_policy: str
    session_id: str
    calls: list[CallDiff] = field(default_factory=list)

    @property
    def differences(self) -> list[CallDiff]:
        return [c for c in self.calls if c.differs]


_REFUSING = {Action.DENY, Action.TERMINATE, Action.QUARANTINE}


def _key(verdicts: list[Verdict] | tuple[Verdict, ...]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((v.rule_id, v.action.value) for v in verdicts))


def recorded_calls(records: list[Record]) -> tuple[list[RecordedCall], str | None]:
    """The episode's tool calls in order, and the hash of the policy it ran under."""
    starts: dict[str, Record] = {}
    outcomes: dict[str, str | None] = {}
    verdicts: dict[str, list[Verdict]] = {}
    policy_hash: str | None = None
    for record in records:
        if record.type == "lifecycle":
            fields = record.data.get("fields", {})
            state = fields.get("life.state")
            if state == "created" and policy_hash is None:
                policy_hash = fields.get("policy_hash")
            elif state == "call_start" and record.call_id:
                starts.setdefault(record.call_id, record)
            elif state == "call_end" and record.call_id:
                outcomes[record.call_id] = fields.get("outcome")
        elif record.type == "verdict" and record.call_id:
            verdicts.setdefault(record.call_id, []).append(record.verdict())
    calls = []
    for call_id, r in starts.items():
        found = tuple(verdicts.get(call_id, ()))
        outcome = outcomes.get(call_id)
        if outcome is None and any(v.action in _REFUSING for v in found):
            outcome = "denied"  # refused before it ran: the session wrote no call_end
        calls.append(RecordedCall(r.step, call_id,
                                  str(r.data.get("fields", {}).get("cmd.raw", "")), outcome, found))
    return calls, policy_hash


def replay_episode(
    state_dir: str | os.PathLike[str] | None,
    episode_id: str,
    *,
    policy: Policy | None = None,
    engine_factory: Callable[[Policy], Evaluator] | None = None,
    recorder: EventRecorder | None = None,
    run_id: str | None = None,
) -> ReplayResult:
    """Re-run ``episode_id`` and compare verdicts. ``engine_factory`` builds the engine
    for the replay session (default: whatever ``Session`` uses by default);
    ``recorder`` records the replay session (default: not recorded)."""
    records, policies = episode_records(state_dir, episode_id)
    calls, policy_hash = recorded_calls(records)
    if policy is None:
        if policy_hash is None or policy_hash not in policies:
            raise AuditError(
                f"the policy episode {episode_id!r} ran under ({policy_hash or 'unknown'}) is "
                "not stored in the audit trail; pass --policy to replay under another policy")
        policy = Policy.from_yaml(policies[policy_hash], source=f"<audit {policy_hash}>")
    engine = engine_factory(policy) if engine_factory is not None else None
    replay_run = run_id or f"replay-{records[0].run_id}"
    with Session(policy, run_id=replay_run, episode_id=f"{episode_id}.replay",
                 state_dir=state_dir, recorder=recorder, engine=engine) as session:
        result = ReplayResult(episode_id, policy_hash, policy.hash, session.session_id)
        outcomes: dict[str, str] = {}
        for call in calls:
            if session.ended:
                outcomes[call.call_id] = "not run (session ended)"
                continue
            try:
                executed = session.exec(call.command, step=call.step, call_id=call.call_id)
            except SessionBroken as exc:
                outcomes[call.call_id] = f"session ended: {exc}"
                continue
            outcomes[call.call_id] = executed.outcome.value
        by_call: dict[str, list[Verdict]] = {}
        for verdict in session.verdicts:
            by_call.setdefault(verdict.call_id or "", []).append(verdict)
    for call in calls:
        result.calls.append(CallDiff(
            call.step, call.call_id, call.command, _key(call.verdicts),
            _key(by_call.get(call.call_id, [])), call.outcome, outcomes.get(call.call_id)))
    return result
