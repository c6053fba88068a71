"""Run-level facts that are not in the audit trail: the RL run summaries that
``RunMonitor.write_summary`` leaves in ``<state>/runs/<run>.json`` (violation rate per
*training* step, by category, and the circuit breaker's state and reason).

The trail knows agent steps (``call.step``) but not which training step an episode
belonged to; the summary does. A run without a summary file has no breaker state to
show, and the dashboard says so instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..state import StateDir

__all__ = ["RunSummary", "run_summaries"]


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    path: str
    paused: str | None  # the breaker's reason, once tripped
    breaker_rate: float | None
    breaker_min_episodes: int | None
    episodes: int
    violating_episodes: int
    training_steps: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def run_summaries(state: StateDir) -> list[RunSummary]:
    """Every readable run summary (a half-written or foreign file is skipped: the
    writer renames complete files into place)."""
    found = []
    runs = state.root / "runs"
    try:
        paths = sorted(runs.glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "run_id" not in data:
            continue
        policy = data.get("policy") or {}
        steps = [s for s in data.get("training_steps") or [] if isinstance(s, dict)]
        found.append(RunSummary(
            str(data["run_id"]), str(path), data.get("paused") or None,
            _num(policy.get("breaker_rate")), _int(policy.get("breaker_min_episodes")),
            int(data.get("episodes") or 0), int(data.get("violating_episodes") or 0),
            steps, [str(n) for n in data.get("notices") or []]))
    return found


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) else None
