"""SkyRL adapter: a ``skyrl_gym`` ``BaseTextEnv`` and a ``loss_masks`` helper.

SkyRL's generator calls ``env.init(prompt) -> (prompt, metadata)``, then per turn
``env.step(action) -> BaseTextEnvStepOutput(observations, reward, done, metadata)``
(observations are OpenAI-style messages) and ``close()``; ``done=True`` ends the
episode. Dropping a trajectory means zeroing its ``loss_masks`` in the
``GeneratorOutput``: ``apply_loss_masks`` does that from the trajectories' flags.

``BastionTextEnv`` follows skyrl-gym's constructor convention ``(env_config, extras)``
so ``skyrl_gym.register(id, entry_point=...)`` + ``skyrl_gym.make`` work; settings for
``BastionEnv`` come from ``env_config`` (a mapping) and ``extras["episode_id"]``.

Interfaces read from skyrl-gym 0.4.0 (skyrl_gym/envs/base_text_env.py, core.py,
envs/registration.py) and SkyRL's GeneratorOutput fields (loss_masks, rewards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..env import BastionEnv
from ._infra import infra_failed_before_start, infra_step, start_episode
from ._text import extract_action

__all__ = ["apply_loss_masks", "register", "text_env_class"]


class _BastionTextEnvMixin:
    env: BastionEnv

    def _setup(self, env_config: Any = None, extras: Mapping[str, Any] | None = None) -> None:
        config = dict(env_config or {})
        self.extras = dict(extras or {})
        self.env = BastionEnv(**config)
        self.max_turns = self.env.max_steps

    def init(self, prompt: list[dict[str, str]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
        options = {"episode_id": str(self.extras["episode_id"])} if "episode_id" in self.extras \
            else None
        task, info = start_episode(self.env, options)
        return [*prompt, {"role": "user", "content": task}], {"bastion": info["bastion"]}

    def step(self, action: str) -> dict[str, Any]:
        obs, reward, terminated, truncated, info = (
            infra_step(self.env) if infra_failed_before_start(self.env)
            else self.env.step(extract_action(action)))
        self.turns = getattr(self, "turns", 0) + 1
        done = terminated or truncated
        return {
            "observations": [] if done else [{"role": "user", "content": obs}],
            "reward": float(reward),
            "done": done,
            "metadata": {"bastion": info["bastion"]},
            "postprocessed_action": None,
        }

    def get_metrics(self) -> dict[str, Any]:
        record = self.env.record
        if record is None:
            return {}
        return {"bastion_violations": len(record.violations), "bastion_penalty": record.penalty,
                "bastion_mask": int(record.flag == "mask"), "bastion_drop": int(record.flag == "drop"),
                "bastion_exclude": int(record.excluded),
                "bastion_infra_failed": int(record.infra_failed)}

    def close(self) -> None:
        self.env.close()


def text_env_class() -> type:
    """``BastionTextEnv``, a subclass of ``skyrl_gym``'s ``BaseTextEnv`` (requires
    skyrl-gym)."""
    from skyrl_gym.envs.base_text_env import BaseTextEnv

    def __init__(self: Any, env_config: Any = None, extras: Mapping[str, Any] | None = None) -> None:
        BaseTextEnv.__init__(self)
        self._setup(env_config, extras)

    return type("BastionTextEnv", (_BastionTextEnvMixin, BaseTextEnv),
                {"__init__": __init__, "__module__": __name__})


def register(name: str = "bastion") -> None:
    """Register ``BastionTextEnv`` with skyrl_gym under ``name``."""
    import skyrl_gym

    skyrl_gym.register(id=name, entry_point=text_env_class())


def apply_loss_masks(loss_masks: Sequence[Sequence[int]], flags: Sequence[str],
                     exclude: Sequence[bool] | None = None) -> list[list[int]]:
    """``GeneratorOutput["loss_masks"]`` with flagged (mask/drop) trajectories, and
    those the policy leaves out (``exclude``: each episode's ``record.excluded`` /
    ``metadata["bastion"]["exclude"]``, e.g. infra-failed), zeroed. Pair it with
    ``bastion.rl.shaping.group_advantages`` so they leave the group baselines too."""
    out = exclude if exclude is not None else [False] * len(flags)
    return [[0] * len(m) if f in ("mask", "drop") or x else list(m)
            for m, f, x in zip(loss_masks, flags, out, strict=True)]
