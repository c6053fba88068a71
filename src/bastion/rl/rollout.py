"""Drive one episode of a scripted (or any callable) policy through an environment."""

from __future__ import annotations

from typing import Any

from .env import BastionEnv
from .records import EpisodeRecord
from .rogue import ScriptedPolicy

__all__ = ["run_episode"]


def run_episode(env: BastionEnv, agent: ScriptedPolicy, *, episode_id: str | None = None,
                seed: int | None = None, labels: dict[str, str] | None = None,
                close: bool = True) -> EpisodeRecord:
    """Reset, act until the episode ends, return its record. The session is closed
    afterwards unless ``close`` is False (e.g. to inspect it or write a report)."""
    agent.reset()
    options: dict[str, Any] = {"labels": {"policy": agent.name, **(labels or {})}}
    if episode_id:
        options["episode_id"] = episode_id
    observation, info = env.reset(seed=seed, options=options)
    reward: float | None = None
    try:
        while True:
            action = agent.act(observation, reward, info)
            observation, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert env.record is not None
        return env.record
    finally:
        if close:
            env.close()
