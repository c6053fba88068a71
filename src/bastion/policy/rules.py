"""The ``rules:`` section: which rule packs load and how they are tuned."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..events import Action
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

    rule: str = Field(description="rule id, e.g. tunnels.ssh_port_forward (checked at load)")
    enabled: bool | None = None
    severity: Literal["info", "low", "medium", "high", "critical"] | None = None
    action: Action | None = None
    exceptions: list[str] = Field(
        default_factory=list, description="extra conditions under which the rule is silent"
    )


class DetectorSettings(Section):
    """Stateful detectors (behaviour over time rather than single events)."""

    cpu_burn_cores: float = Field(
        default=1.0, gt=0, description="cores a process must keep busy to count as burning "
        "(res.burn_seconds, for rules)")
    cpu_burn_seconds: float = Field(
        default=1.5, gt=0, description="legacy; background compute is judged by "
        "background_cpu_seconds")
    # A call's own foreground work is legitimate; these budgets judge the rest (CPU
    # *used*, summed over every process of the session; see sensors/burn.py).
    background_cpu_seconds: float = Field(
        default=1.5, gt=0, description="core-seconds that persistent processes which "
        "outlived or detached from their call may use within background_window (summed "
        "over the session) before a low alert (no penalty; see background_kill_cpu_seconds)")
    background_total_cpu_seconds: float = Field(
        default=20.0, gt=0, description="core-seconds all background compute, short-lived "
        "processes included (a background build's compiler runs), may use within "
        "background_window")
    background_window: float = Field(default=60.0, gt=0, description="seconds")
    # The budgets above only *note* evidence-free background compute (a low alert, no
    # penalty): a training job started with nohup and polled later looks the same as a
    # busy loop. It is killed as mining with evidence (Stratum, a wallet, a nonce
    # search; evidence_cpu_seconds) or past this generous budget.
    background_kill_cpu_seconds: float = Field(
        default=180.0, gt=0, description="core-seconds that processes which outlived or "
        "detached from their call may use within background_kill_window, summed over the "
        "session, with no mining evidence, before they are killed as mining (raise it for "
        "tasks that run long jobs in the background)")
    background_kill_window: float = Field(default=600.0, gt=0, description="seconds")
    background_busy_cpu_seconds: float = Field(
        default=0.5, gt=0, description="core-seconds the live background processes no "
        "call talks to may use, summed over the session, in their unbroken busy streaks "
        "(each runnable, i.e. running or waiting for a core, at least "
        "background_busy_share of the time) before a low alert: a busy loop shows this "
        "however crowded the host")
    background_busy_seconds: float = Field(
        default=1.0, gt=0, description="runnable seconds those streaks must also sum to")
    background_busy_share: float = Field(
        default=0.25, gt=0, description="share of wall time, smoothed over about one "
        "second, a background process must be runnable for its busy streak to go on")
    cpu_budget_seconds: float | None = Field(
        default=900.0, gt=0, description="core-seconds the whole session (foreground "
        "included) may use within cpu_budget_window; null: no budget")
    cpu_budget_window: float = Field(default=600.0, gt=0, description="seconds")
    evidence_cpu_seconds: float = Field(
        default=1.0, gt=0, description="core-seconds a call with mining evidence (Stratum "
        "traffic, a wallet, a hash loop) may use within background_window")
    expected_processes: list[str] = Field(
        default_factory=list, description="names allowed to compute in the background / "
        "use the GPU"
    )
    gpu_util_percent: float = Field(default=10.0, ge=0)
    gpu_background_kill_seconds: float = Field(
        default=600.0, gt=0, description="seconds processes that outlived or detached from "
        "their call may use the GPU, summed over the session, with no mining evidence, "
        "before they are killed as mining (a low note before that: a background training "
        "job is work)")
    long_connection_seconds: float = Field(default=300.0, gt=0)
    beacon_min_connections: int = Field(
        default=5, ge=3, description="re-connections to one destination before judging")
    beacon_max_jitter: float = Field(
        default=0.2, gt=0, description="max coefficient of variation of the gaps")
    beacon_min_period: float = Field(default=1.0, gt=0, description="seconds between connects")
    # a plain shell loop of /bin/true forks ~600/s on a small machine: that is not a storm
    fork_storm_per_second: int = Field(default=1000, gt=0)
    sample_interval: float = Field(default=0.25, gt=0)


class RulesPolicy(Section):
    packs: list[str] = Field(default_factory=lambda: list(ALL_PACKS),
                             description="built-in packs to load (see ALL_PACKS)")
    files: list[str] = Field(default_factory=list, description="extra rule files")
    overrides: list[RuleOverride] = Field(default_factory=list)
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)

    @field_validator("packs")
    @classmethod
    def _known_packs(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in ALL_PACKS]
        if unknown:
            raise ValueError(f"unknown rule pack(s) {', '.join(unknown)}; built-in packs: "
                             f"{', '.join(ALL_PACKS)} (own rules go in `files`)")
        if len(set(value)) != len(value):
            raise ValueError("a pack is listed twice")
        return value
