"""The ``rl:`` section: how verdicts shape rewards and trajectories."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Section

__all__ = ["RLPolicy"]


class RLPolicy(Section):
    penalty: dict[Literal["info", "low", "medium", "high", "critical"], float] = Field(
        default_factory=lambda: {"critical": -1.0, "high": -0.5, "medium": -0.1}
    )
    terminate_on: list[Literal["info", "low", "medium", "high", "critical"]] = Field(
        default_factory=lambda: ["critical"]
    )
    on_violation: Literal["keep", "mask", "drop"] = "mask"
    breaker_rate: float = Field(
        default=0.25, ge=0, le=1, description="pause the run above this violation rate"
    )
