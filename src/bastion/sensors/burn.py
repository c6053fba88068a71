"""What "burning CPU" means, shared by the resource sensor (which reports
``res.burn_seconds`` for rules) and the engine's CPU-burn detector (which decides).

A process burns when its CPU use, or its CPU *demand* (run + run-queue wait, which
does not shrink on a busy host), reaches the threshold. The threshold is the policy's
``cpu_burn_cores`` capped at the session's CPU limit, so a session limited below it can
still trip it; the 10% tolerance absorbs /proc's 10 ms tick and scheduler jitter (a
process pinned at one core measures 0.96..1.04 cores over 250 ms).
"""

from __future__ import annotations

__all__ = ["BURN_TOLERANCE", "burn_threshold", "is_burning"]

BURN_TOLERANCE = 0.9


def burn_threshold(cpu_burn_cores: float, cap_cores: float | None) -> float:
    return min(cpu_burn_cores, cap_cores) if cap_cores else cpu_burn_cores


def is_burning(cores: float, demand: float | None, threshold: float) -> bool:
    return max(cores, demand or 0.0) >= threshold * BURN_TOLERANCE
