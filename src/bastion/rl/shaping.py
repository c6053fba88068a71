"""From verdicts to what a trainer acts on: penalty, termination, trajectory flag.

This is the only place where verdicts turn into reward. Its inputs are verdicts
(deterministic containment signals from rules over observed events); it never takes a
score from a learned monitor, by design.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..events import Action, Severity, Verdict
from ..policy.rl import RLPolicy

__all__ = ["CONTAINING_ACTIONS", "StepJudgement", "TrajectoryFlag", "excluded",
           "group_advantages", "judge", "trajectory_flag", "verdict_info"]

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


def excluded(flag: TrajectoryFlag, infra_failed: bool, rl: RLPolicy) -> bool:
    """Whether a trajectory stays out of group statistics (``rl.exclude``): a
    ``drop`` always does; a ``mask`` when ``"masked"`` is listed; an infra-failed one
    when ``"infra_failed"`` is listed. Masking the loss alone is not enough: a
    masked trajectory's reward (a penalty, or 0 from a dead sandbox) still moves its
    GRPO group's mean and so every other member's advantage."""
    if flag == "drop":
        return True
    if flag == "mask" and "masked" in rl.exclude:
        return True
    return infra_failed and "infra_failed" in rl.exclude


def group_advantages(rewards: Sequence[float], groups: Sequence[Hashable],
                     leave_out: Sequence[bool], *, normalise: bool = True,
                     eps: float = 1e-6) -> list[float]:
    """GRPO-style advantages, ``(r - mean) / (std + eps)`` over each group, computed
    over the members that are not left out; a left-out member gets 0 (no gradient,
    and no weight in anyone else's baseline). A group with one counted member gets 0
    for it (no baseline to compare with). For trainers that compute advantages
    themselves; the adapters' masks pair with it."""
    if not len(rewards) == len(groups) == len(leave_out):
        raise ValueError("rewards, groups and leave_out must have the same length")
    counted: dict[Hashable, list[float]] = {}
    for reward, group, out in zip(rewards, groups, leave_out, strict=True):
        if not out:
            counted.setdefault(group, []).append(float(reward))
    stats: dict[Hashable, tuple[float, float]] = {}
    for group, values in counted.items():
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) \
            if len(values) > 1 else 0.0
        stats[group] = (mean, std)
    out_values: list[float] = []
    for reward, group, out in zip(rewards, groups, leave_out, strict=True):
        if out or len(counted[group]) < 2:
            out_values.append(0.0)
            continue
        mean, std = stats[group]
        diff = float(reward) - mean
        out_values.append(diff / (std + eps) if normalise else diff)
    return out_values


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
