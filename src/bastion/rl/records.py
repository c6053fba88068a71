"""What one episode looked like, step by step, for trainers, reports and run safety.

Penalties are charged to the step that *caused* them (``Verdict.step``), not to the
step at which the verdict arrived: a miner started at step 3 and caught at step 9 is
step 3's fault. Gym-style rewards can only be paid at the current step, so the record
keeps both views: ``reward`` (paid when the verdict arrived) and ``penalty_by_step``
(charged to the cause), which credit-assigning trainers should prefer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .shaping import TrajectoryFlag

__all__ = ["EpisodeRecord", "StepRecord"]


@dataclass
class StepRecord:
    step: int
    call_id: str
    action: str
    tool: str
    outcome: str | None
    exit_code: int | None
    task_reward: float
    penalty: float
    reward: float
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EpisodeRecord:
    run_id: str
    episode_id: str
    session_id: str
    policy_hash: str
    steps: list[StepRecord] = field(default_factory=list)
    terminated_by: str | None = None
    truncated: bool = False
    flag: TrajectoryFlag = "keep"
    violations: list[dict[str, Any]] = field(default_factory=list)
    penalty_by_step: dict[int, float] = field(default_factory=dict)
    late_verdicts: list[dict[str, Any]] = field(default_factory=list)  # after the last step
    # raised while reset() built the episode (task setup); charged to step -1, paid
    # with the first step's reward
    setup_verdicts: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # e.g. {"policy": "rogue"}
    # the sandbox died or could not be built for a reason that was not the agent's
    # (node or host loss, setup failure): no penalty, not a violation; the trainer
    # should leave the trajectory out (rl.exclude)
    infra_reason: str | None = None
    excluded: bool = False  # left out of group statistics under the policy's rl.exclude

    @property
    def infra_failed(self) -> bool:
        return self.infra_reason is not None

    @property
    def total_reward(self) -> float:
        return sum(s.reward for s in self.steps)

    @property
    def task_reward(self) -> float:
        return sum(s.task_reward for s in self.steps)

    @property
    def penalty(self) -> float:
        """Every penalty charged to this episode, including verdicts that arrived
        after its last step."""
        return sum(self.penalty_by_step.values())

    @property
    def violated(self) -> bool:
        return bool(self.violations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "episode_id": self.episode_id,
            "session_id": self.session_id,
            "policy_hash": self.policy_hash,
            "labels": dict(self.labels),
            "infra_failed": self.infra_failed,
            "infra_reason": self.infra_reason,
            "excluded": self.excluded,
            "steps": [s.to_dict() for s in self.steps],
            "terminated_by": self.terminated_by,
            "truncated": self.truncated,
            "flag": self.flag,
            "violations": list(self.violations),
            "penalty_by_step": {str(k): v for k, v in self.penalty_by_step.items()},
            "late_verdicts": list(self.late_verdicts),
            "setup_verdicts": list(self.setup_verdicts),
            "total_reward": self.total_reward,
            "task_reward": self.task_reward,
            "penalty": self.penalty,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeRecord:
        record = cls(
            run_id=data["run_id"], episode_id=data["episode_id"],
            session_id=data["session_id"], policy_hash=data["policy_hash"],
            steps=[StepRecord(**s) for s in data["steps"]],
            terminated_by=data.get("terminated_by"), truncated=data.get("truncated", False),
            flag=data.get("flag", "keep"), violations=list(data.get("violations", [])),
            penalty_by_step={int(k): v for k, v in data.get("penalty_by_step", {}).items()},
            late_verdicts=list(data.get("late_verdicts", [])),
            setup_verdicts=list(data.get("setup_verdicts", [])),
            labels=dict(data.get("labels", {})),
            infra_reason=data.get("infra_reason"), excluded=bool(data.get("excluded", False)),
        )
        return record
