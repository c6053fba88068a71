"""bastion for reinforcement learning: environments, reward shaping, run safety.

``BastionEnv`` (Gymnasium and GEM-style) runs each episode in a bastion session and
reports every step's verdicts; ``RunMonitor`` watches a run's violation rates and
trips a circuit breaker; ``RoguePolicy``/``OrdinaryPolicy`` are scripted agents for
demos, tests and benchmarks; ``adapters`` plug the environment into trainers.
"""

from __future__ import annotations

from .actions import ToolCall, parse_action
from .env import BastionEnv
from .grading import Grader, GradeResult, grade
from .records import EpisodeRecord, StepRecord
from .rogue import OrdinaryPolicy, RoguePolicy, ScriptedPolicy
from .rollout import run_episode
from .safety import BreakerTripped, RunMonitor, TrainingStepStats
from .shaping import StepJudgement, judge
from .tasks import FixBugTask, StepContext, Task

__all__ = [
    "BastionEnv",
    "BreakerTripped",
    "EpisodeRecord",
    "FixBugTask",
    "GradeResult",
    "Grader",
    "OrdinaryPolicy",
    "RoguePolicy",
    "RunMonitor",
    "ScriptedPolicy",
    "StepContext",
    "StepJudgement",
    "StepRecord",
    "Task",
    "ToolCall",
    "TrainingStepStats",
    "grade",
    "judge",
    "parse_action",
    "run_episode",
]
