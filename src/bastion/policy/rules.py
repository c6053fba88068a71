"""The ``rules:`` section: which rule packs load and how they are tuned."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Section

__all__ = ["DetectorSettings", "RuleOverride", "RulesPolicy"]

ALL_PACKS = [
    "mining",
    "tunnels",
    "shells",
    "persistence",
    "credentials",
    "reward_integrity",
    "exfil",
    "download_exec",
    "privesc",
    "defense_evasion",
    "monitor_tamper",
    "recon",
]


class RuleOverride(Section):
    """Tune one rule without editing its pack."""

    rule: str
    enabled: bool | None = None
    severity: Literal["info", "low", "medium", "high", "critical"] | None = None
    action: str | None = None
    exceptions: list[str] = Field(
        default_factory=list, description="extra conditions under which the rule is silent"
    )


class DetectorSettings(Section):
    """Stateful detectors (behaviour over time rather than single events)."""

    cpu_burn_cores: float = Field(default=1.0, gt=0)
    cpu_burn_seconds: float = Field(default=1.5, gt=0)
    expected_processes: list[str] = Field(
        default_factory=list, description="names allowed to burn CPU / use the GPU"
    )
    gpu_util_percent: float = Field(default=10.0, ge=0)
    long_connection_seconds: float = Field(default=300.0, gt=0)
    fork_storm_per_second: int = Field(default=200, gt=0)
    sample_interval: float = Field(default=0.25, gt=0)


class RulesPolicy(Section):
    packs: list[str] = Field(default_factory=lambda: list(ALL_PACKS))
    files: list[str] = Field(default_factory=list, description="extra rule files")
    overrides: list[RuleOverride] = Field(default_factory=list)
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
