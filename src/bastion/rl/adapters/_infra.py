"""Episodes whose sandbox could not be built, for adapters whose trainers cannot take
an exception from ``reset`` without losing the whole rollout batch.

``start_episode`` is ``env.reset``; but when the session cannot be created for a
reason that is not the agent's (the sandbox, the image, the host: a ``BastionError``
that is not a ``PolicyError``), the episode becomes an infra-failed one: the env's
record says ``infra_failed`` (no penalty, ``excluded`` per ``rl.exclude``) and the
first step ends it at once (``infra_step``) with the same info keys a real step has.
A bad policy still raises: that is the run's mistake, and it must be loud.
"""

from __future__ import annotations

from typing import Any

from ...errors import BastionError, PolicyError
from ..env import BastionEnv
from ..records import EpisodeRecord
from ..shaping import excluded

__all__ = ["infra_failed_before_start", "infra_step", "start_episode"]


def start_episode(env: BastionEnv, options: dict[str, Any] | None = None,
                  **reset_kwargs: Any) -> tuple[str, dict[str, Any]]:
    try:
        return env.reset(options=options, **reset_kwargs)
    except PolicyError:
        raise
    except BastionError as exc:
        reason = f"session setup failed: {exc}"
        episode_id = str((options or {}).get("episode_id") or f"{env.name}-setup-failed")
        env.record = EpisodeRecord(
            run_id=env.run_id, episode_id=episode_id, session_id="",
            policy_hash=env.policy.hash, infra_reason=reason,
            excluded=excluded("keep", True, env.policy.rl))
        return f"the sandbox could not be started: {reason}", {"bastion": _info(env.record)}


def infra_failed_before_start(env: BastionEnv) -> bool:
    """The episode never got a session (``start_episode`` recorded why)."""
    return env.session is None and env.record is not None and env.record.infra_failed \
        and not env.record.steps


def infra_step(env: BastionEnv) -> tuple[str, float, bool, bool, dict[str, Any]]:
    """The one step of an episode whose sandbox never started: it ends at once,
    reward 0, no penalty."""
    assert env.record is not None
    return (f"the sandbox could not be started: {env.record.infra_reason}", 0.0, True, False,
            {"bastion": _info(env.record)})


def _info(record: EpisodeRecord) -> dict[str, Any]:
    return {"attribution": {"run_id": record.run_id, "episode_id": record.episode_id,
                            "step": None, "call_id": None},
            "tool": None, "outcome": None, "exit_code": None, "verdicts": [], "actions": [],
            "task_reward": 0.0, "penalty": 0.0, "violations": 0,
            "terminated_by": record.infra_reason, "flag": record.flag,
            "episode_violations": 0, "infra_failed": True,
            "infra_reason": record.infra_reason, "exclude": record.excluded}
