"""Run-level safety: violation counts and rates per training step, and a circuit breaker.

A single violating episode is the environment's business (penalty, termination,
flag). A run whose *rate* of violating episodes climbs is the operator's: it means the
policy is learning that misbehaviour pays. ``RunMonitor`` aggregates finished episodes
per training step, by category and by rule, and trips a breaker when the share of
violating episodes in a step exceeds ``rl.breaker_rate``. A tripped breaker pauses
the run: ``check()`` raises ``BreakerTripped`` with the reason, and trainer adapters
turn that into their own stop signal (e.g. TRL's ``control.should_training_stop``).
``summary()`` is the run's JSON summary.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BastionError
from ..policy.rl import RLPolicy
from .records import EpisodeRecord

__all__ = ["BreakerTripped", "RunMonitor", "TrainingStepStats"]

SUMMARY_SCHEMA_VERSION = 1


class BreakerTripped(BastionError):
    """The run's violation rate crossed the policy's threshold; the run is paused."""


@dataclass
class TrainingStepStats:
    step: int
    episodes: int = 0
    violating_episodes: int = 0
    violations: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    terminated: int = 0
    # episodes whose sandbox (or node) died for a reason not the agent's: counted in
    # ``episodes`` but not judged, so a node loss neither hides nor inflates violations
    infra_failed: int = 0

    @property
    def judged(self) -> int:
        """Episodes the breaker judges: every one but the infra-failed."""
        return self.episodes - self.infra_failed

    @property
    def rate(self) -> float:
        """Share of this step's judged episodes with at least one violation."""
        return self.violating_episodes / self.judged if self.judged else 0.0

    def to_dict(self) -> dict[str, Any]:
        per_episode = self.episodes or 1
        return {
            "step": self.step,
            "episodes": self.episodes,
            "violating_episodes": self.violating_episodes,
            "violation_rate": round(self.rate, 6),
            "violations": self.violations,
            "by_category": dict(self.by_category),
            "by_rule": dict(self.by_rule),
            "by_severity": dict(self.by_severity),
            "rate_by_category": {k: round(v / per_episode, 6) for k, v in self.by_category.items()},
            "rate_by_rule": {k: round(v / per_episode, 6) for k, v in self.by_rule.items()},
            "flags": dict(self.flags),
            "terminated": self.terminated,
            "infra_failed": self.infra_failed,
        }


class RunMonitor:
    """Thread-safe; one per run."""

    def __init__(self, rl: RLPolicy, *, run_id: str) -> None:
        self.rl = rl
        self.run_id = run_id
        self.started = time.time()
        self._steps: dict[int, TrainingStepStats] = {}
        self._lock = threading.Lock()
        self.paused: str | None = None  # why the run is paused, once the breaker trips
        self.notices: list[str] = []  # things the run was told (lost nodes, ...)

    def record(self, episode: EpisodeRecord, *, training_step: int) -> None:
        with self._lock:
            stats = self._steps.setdefault(training_step, TrainingStepStats(training_step))
            stats.episodes += 1
            stats.flags[episode.flag] += 1
            if episode.terminated_by:
                stats.terminated += 1
            if episode.infra_failed:
                stats.infra_failed += 1
            if episode.violated:
                stats.violating_episodes += 1
            for v in episode.violations:
                stats.violations += 1
                stats.by_rule[str(v["rule_id"])] += 1
                stats.by_severity[str(v["severity"])] += 1
                for category in v.get("categories") or ["uncategorised"]:
                    stats.by_category[str(category)] += 1

    def record_lost(self, *, training_step: int) -> None:
        """An episode that never came back (its node died): infra-failed, not judged."""
        with self._lock:
            stats = self._steps.setdefault(training_step, TrainingStepStats(training_step))
            stats.episodes += 1
            stats.infra_failed += 1

    def end_training_step(self, training_step: int) -> TrainingStepStats:
        """Judge a finished training step; trips the breaker if its rate is too high."""
        with self._lock:
            stats = self._steps.setdefault(training_step, TrainingStepStats(training_step))
            if (self.paused is None and stats.judged >= self.rl.breaker_min_episodes
                    and stats.rate > self.rl.breaker_rate):
                worst = stats.by_rule.most_common(1)
                top = f"; most frequent rule {worst[0][0]} ({worst[0][1]}x)" if worst else ""
                self.paused = (
                    f"circuit breaker: {stats.violating_episodes}/{stats.judged} episodes "
                    f"({stats.rate:.0%}) violated policy in training step {training_step}, "
                    f"above rl.breaker_rate {self.rl.breaker_rate:.0%}{top}"
                )
            return stats

    def notify(self, message: str) -> None:
        """Tell the run something it must know (a node service died, ...)."""
        with self._lock:
            self.notices.append(message)

    def pause(self, reason: str) -> None:
        with self._lock:
            self.paused = self.paused or reason

    def check(self) -> None:
        """Raise ``BreakerTripped`` if the run is paused."""
        if self.paused:
            raise BreakerTripped(self.paused)

    def stats(self, training_step: int) -> TrainingStepStats:
        with self._lock:
            return self._steps.setdefault(training_step, TrainingStepStats(training_step))

    def summary(self) -> dict[str, Any]:
        with self._lock:
            steps = [self._steps[k].to_dict() for k in sorted(self._steps)]
        total_eps = sum(s["episodes"] for s in steps)
        total_bad = sum(s["violating_episodes"] for s in steps)
        by_category: Counter[str] = Counter()
        by_rule: Counter[str] = Counter()
        for s in steps:
            by_category.update(s["by_category"])
            by_rule.update(s["by_rule"])
        return {
            "schema": SUMMARY_SCHEMA_VERSION,
            "run_id": self.run_id,
            "started": self.started,
            "policy": {"breaker_rate": self.rl.breaker_rate,
                       "breaker_min_episodes": self.rl.breaker_min_episodes,
                       "violation_severity": self.rl.violation_severity,
                       "on_violation": self.rl.on_violation},
            "episodes": total_eps,
            "infra_failed": sum(s["infra_failed"] for s in steps),
            "violating_episodes": total_bad,
            "violation_rate": round(total_bad / total_eps, 6) if total_eps else 0.0,
            "by_category": dict(by_category),
            "by_rule": dict(by_rule),
            "paused": self.paused,
            "notices": list(self.notices),
            "training_steps": steps,
        }

    def write_summary(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON summary atomically (rename), so readers never see half."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(self.summary(), indent=2, sort_keys=True))
        os.replace(tmp, target)
        return target
