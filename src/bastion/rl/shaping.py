"""From verdicts to what a trainer acts on: penalty, termination, trajectory flag.

This is the only place where verdicts turn into reward. Its inputs are verdicts
(deterministic containment signals from rules over observed events); it never takes a
score from a learned monitor, by design.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ..events import Action, Severity, Verdict
from ..policy.rl import RLPolicy

__all__ = ["CONTAINING_ACTIONS", "StepJudgement", "TrajectoryFlag", "judge", "trajectory_flag",
           "verdict_info"]

TrajectoryFlag = Literal["keep", "mask", "drop"]

# Actions after which the offending activity no longer runs.
CONTAINING_ACTIONS = frozenset({Action.DENY, Action.CUT, Action.KILL, Action.FREEZE,
                                Action.TERMINATE, Action.QUARANTINE})


@dataclass(frozen=True)
class StepJudgement:
    penalty: float
    terminate: bool
    violations: tuple[Verdict, ...]  # verdicts at or above rl.violation_severity
    reason: str | None  # why the episode ends, when it does


def judge(verdicts: Iterable[Verdict], rl: RLPolicy) -> StepJudgement:
    """Penalty (sum over verdicts), whether to end the episode, and the violations."""
    floor = Severity.parse(rl.violation_severity)
    ends = {Severity.parse(s) for s in rl.terminate_on}
    penalty = 0.0
    violations: list[Verdict] = []
    reason: str | None = None
    for verdict in verdicts:
        penalty += rl.penalty.get(str(verdict.severity), 0.0)  # type: ignore[call-overload]
        if verdict.severity >= floor:
            violations.append(verdict)
        if verdict.severity in ends and reason is None:
            reason = f"{verdict.rule_id} ({verdict.severity}) at step {verdict.step}"
    return StepJudgement(penalty, reason is not None, tuple(violations), reason)


def trajectory_flag(violated: bool, rl: RLPolicy) -> TrajectoryFlag:
    return rl.on_violation if violated else "keep"


def verdict_info(verdict: Verdict, charged_step: int | None = None) -> dict[str, object]:
    """The part of a verdict a trainer needs, as plain JSON-able data. Deterministic
    fields only (no ids or clocks), so identical steps give identical infos.

    ``step``/``call_id`` are the verdict's own attribution (the call that caused it);
    ``charged_step`` is the step its penalty is charged to: the verdict's step when it
    has one, else the step during which it arrived (given by the caller)."""
    return {
        "rule_id": verdict.rule_id,
        "severity": str(verdict.severity),
        "action": verdict.action.value,
        "categories": list(verdict.categories),
        "message": verdict.message,
        "run_id": verdict.run_id,
        "episode_id": verdict.episode_id,
        "step": verdict.step,
        "call_id": verdict.call_id,
        "charged_step": verdict.step if verdict.step is not None else charged_step,
        "contained": verdict.action in CONTAINING_ACTIONS,
    }
