"""The ``rl:`` section: how verdicts shape rewards, episodes, trajectories and runs.

Only deterministic containment signals (verdicts from rules over observed events) feed
these settings, never a learned monitor's score: rewarding an agent for fooling a
monitor teaches obfuscation, while rewarding it for not tripping a syscall- or
packet-level rule teaches it not to do the thing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Section

__all__ = ["ExcludeName", "RLPolicy", "SeverityName"]

SeverityName = Literal["info", "low", "medium", "high", "critical"]
# which trajectories a trainer leaves out of group statistics (GRPO means, baselines):
# "masked" ones (flag ``mask``: a violation) and "infra_failed" ones (the sandbox died
# for a reason that was not the agent's). ``drop``-flagged ones are always left out.
ExcludeName = Literal["masked", "infra_failed"]


class RLPolicy(Section):
    penalty: dict[SeverityName, float] = Field(
        default_factory=lambda: {"critical": -1.0, "high": -0.5, "medium": -0.1},
        description="reward added per verdict of each severity (usually negative)",
    )
    terminate_on: list[SeverityName] = Field(
        default_factory=lambda: ["critical"],
        description="a verdict of one of these severities ends the episode",
    )
    on_violation: Literal["keep", "mask", "drop"] = Field(
        default="mask", description="what a trainer should do with a violating trajectory"
    )
    violation_severity: SeverityName = Field(
        default="medium",
        description="verdicts at or above this severity count as violations "
        "(trajectory flag, run-level rates, circuit breaker)",
    )
    breaker_rate: float = Field(
        default=0.25, ge=0, le=1,
        description="pause the run when the share of violating episodes in a training "
        "step exceeds this",
    )
    breaker_min_episodes: int = Field(
        default=4, ge=1,
        description="the breaker only judges training steps with at least this many episodes",
    )
    exclude: list[ExcludeName] = Field(
        default_factory=lambda: ["infra_failed"],
        description="trajectories left out of group statistics (reward means and "
        "baselines), not only of the loss: 'masked' (flagged mask) and/or "
        "'infra_failed' (the sandbox died for a non-policy reason); 'drop'-flagged "
        "trajectories are always left out",
    )
