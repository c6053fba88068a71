"""The API's resource shapes (pydantic), which are also what the OpenAPI document
describes. Field names follow the audit records they come from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ActionOut",
    "ActionRequest",
    "ActionResult",
    "AuditOut",
    "BreakerOut",
    "CallOut",
    "EpisodeDetail",
    "EpisodeOut",
    "EventOut",
    "Health",
    "PolicyDetail",
    "PolicyOut",
    "RunOut",
    "SessionOut",
    "StepStats",
    "VerdictOut",
    "VerifyOut",
]

SeverityName = Literal["info", "low", "medium", "high", "critical"]
SessionState = Literal["live", "frozen", "terminated", "quarantined", "closed", "lost"]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    detail: str = ""


class VerifyOut(BaseModel):
    ok: bool
    kind: str | None = Field(None, description="kind of tampering or damage found")
    seq: int | None = Field(None, description="first bad record")
    detail: str | None = None
    records: int
    checkpoints: int
    exported: int
    latest_exported: int | None
    key_source: str
    notes: list[str]
    verified_at: float | None


class AuditOut(BaseModel):
    run_id: str
    records: int
    checkpoint_size: int | None = Field(None, description="size the newest signed "
                                        "checkpoint commits to")
    checkpoint_time: float | None
    checkpoint_age_seconds: float | None
    unanchored_records: int = Field(description="records no signed checkpoint covers yet")
    verify: VerifyOut | None = Field(None, description="the last full verify (runs in the "
                                     "background)")


class BreakerOut(BaseModel):
    run_id: str
    tripped: bool
    reason: str | None
    breaker_rate: float | None
    breaker_min_episodes: int | None
    episodes: int
    violating_episodes: int
    training_steps: list[dict[str, Any]]
    notices: list[str]


class RunOut(BaseModel):
    run_id: str
    records: int
    last_wall: float
    sessions: int
    live_sessions: int
    episodes: int
    calls: int
    verdicts: int
    breaker: BreakerOut | None


class SessionOut(BaseModel):
    session_id: str
    run_id: str
    episode_id: str
    state: SessionState
    reason: str | None
    policy: str
    policy_hash: str
    network_phase: str | None
    created: float
    last_wall: float
    calls: int
    verdicts: int
    worst: SeverityName | None


class CallOut(BaseModel):
    run_id: str
    episode_id: str
    session_id: str
    call_id: str
    step: int | None
    command: str
    start: float | None
    end: float | None
    outcome: str | None
    exit_code: int | None
    verdicts: int
    worst: SeverityName | None


class EpisodeOut(BaseModel):
    episode_id: str
    run_id: str
    state: SessionState
    sessions: list[str]
    reason: str | None
    network_phase: str | None
    calls: int
    verdicts: int
    worst: SeverityName | None
    first_wall: float
    last_wall: float


class EventOut(BaseModel):
    run_id: str
    seq: int
    type: str
    kind: str
    session_id: str
    episode_id: str
    step: int | None
    call_id: str | None
    pid: int | None
    ppid: int | None
    wall: float
    fields: dict[str, Any]


class VerdictOut(BaseModel):
    run_id: str
    seq: int
    id: str
    rule_id: str
    severity: str
    message: str
    action: str
    categories: list[str]
    mitre: list[str]
    session_id: str
    episode_id: str
    step: int | None
    call_id: str | None
    pid: int | None
    policy_hash: str
    wall: float
    evidence: dict[str, Any]


class ActionOut(BaseModel):
    run_id: str
    seq: int
    session_id: str
    episode_id: str
    step: int | None
    call_id: str | None
    wall: float
    name: str
    target: str
    rule: str
    ok: bool | None
    detail: str
    operator: bool = Field(description="taken by an operator through this API")


class EpisodeDetail(EpisodeOut):
    calls_list: list[CallOut]
    verdicts_list: list[VerdictOut]
    actions_list: list[ActionOut]


class PolicyOut(BaseModel):
    hash: str
    name: str
    run_id: str
    seq: int
    wall: float


class PolicyDetail(PolicyOut):
    text: str


class StepStats(BaseModel):
    step: int
    calls: int
    violating_calls: int
    rate: float = Field(description="share of this step's calls with a violation")
    verdicts: int
    by_category: dict[str, int]


class ActionRequest(BaseModel):
    action: Literal["freeze", "thaw", "terminate", "quarantine", "network_phase"]
    reason: str = Field("", max_length=500)
    phase: str | None = Field(None, max_length=100, description="for network_phase")


class ActionResult(BaseModel):
    status: int
    stage: str
    detail: str
    seq: int = Field(description="position of the outcome record in the run's audit log "
                     "(-1: a refusal over the client's allowance, counted, not recorded)")
