"""ROLL (alibaba/ROLL) adapter: a GEM environment and a ``GroupFilter``.

ROLL's agentic pipeline drives GEM environments (``gem.Env``: ``reset(seed) ->
(obs, info)``, ``step(action) -> (obs, reward, terminated, truncated, info)`` with text
observations) registered with ``gem.register(name, entry_point="module:Class")``.
``TrajEnvManager`` ends the trajectory on ``terminated``/``truncated``, puts the reward
into ``step_scores``/``episode_scores`` and merges ``info`` into the history, where
numeric keys become ``env/<tag>/*`` metrics. So ``step`` returns a *flat numeric*
info (``bastion_violations``, ``bastion_penalty``, ``bastion_mask``, ``bastion_drop``);
the full verdicts stay on ``env.last_bastion_info``.

``BastionGroupFilter`` is a ROLL ``group_filter_cls``: it drops a GRPO group when any
of its rollouts carries ``meta_info["drop_flag"]`` (ROLL's convention),
``meta_info["bastion_flag"] == "drop"`` or ``meta_info["bastion_exclude"]`` (left out
by the policy's ``rl.exclude``, e.g. its sandbox died for a non-policy reason: ROLL
filters whole groups, so the group goes).

Interfaces read from: gem-llm 0.1.0 (gem/core.py, gem/envs/registration.py) and ROLL
main (roll/pipeline/agentic/env/__init__.py, agentic_pipeline.GroupFilter), 2026-11.

Use::

    from bastion.rl.adapters.roll import register
    register("bastion_swe", policy="policy.yaml", state_dir="/var/lib/bastion")
    # then in the ROLL env config: env_type: bastion_swe
"""

from __future__ import annotations

from typing import Any

from ..env import BastionEnv
from ._infra import infra_failed_before_start, infra_step, start_episode
from ._text import extract_action

__all__ = ["BastionGemEnv", "BastionGroupFilter", "register"]


class BastionGemEnv:
    """A GEM-style text environment over ``BastionEnv``. It inherits from nothing so
    that bastion does not need gem; ``gem.make`` only needs the constructor and
    methods, and ``isinstance(env, gem.Env)`` holds when gem is installed because
    ``register`` registers a subclass built on the fly (see ``gem_class``)."""

    def __init__(self, extract: bool = True, **env_kwargs: Any) -> None:
        self.env = BastionEnv(**env_kwargs)
        self.extract = extract
        self.last_bastion_info: dict[str, Any] = {}

    def reset(self, seed: int | None = None, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        obs, info = start_episode(self.env, kwargs or None, seed=seed)
        self.last_bastion_info = info["bastion"]
        return obs, {"bastion_episode": self.env.record.episode_id if self.env.record else ""}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        act = extract_action(action) if self.extract else action
        obs, reward, terminated, truncated, info = (
            infra_step(self.env) if infra_failed_before_start(self.env) else self.env.step(act))
        b = self.last_bastion_info = info["bastion"]
        flag = b["flag"]
        return obs, reward, terminated, truncated, {
            "bastion_violations": float(b["violations"]),
            "bastion_penalty": float(b["penalty"]),
            "bastion_task_reward": float(b["task_reward"]),
            "bastion_mask": float(flag == "mask"),
            "bastion_drop": float(flag == "drop"),
            "bastion_terminated": float(b["terminated_by"] is not None),
            "bastion_exclude": float(b["exclude"]),
            "bastion_infra_failed": float(b["infra_failed"]),
        }

    def sample_random_action(self) -> str:
        return self.env.action_space.sample()

    def spawn(self, same_state: bool = False, **kwargs: Any) -> BastionGemEnv:
        if same_state:
            raise ValueError("a bastion session cannot be cloned; spawn a fresh episode")
        return type(self)(**kwargs)

    @property
    def unwrapped(self) -> BastionGemEnv:
        return self

    @property
    def flag(self) -> str:
        return self.env.record.flag if self.env.record else "keep"

    def close(self) -> None:
        self.env.close()


def gem_class() -> type:
    """``BastionGemEnv`` as a subclass of ``gem.Env`` (requires gem-llm)."""
    import gem

    return type("BastionGemEnv", (BastionGemEnv, gem.Env), {"__module__": __name__})


def register(name: str = "bastion", **env_kwargs: Any) -> None:
    """Register the environment with gem under ``name`` (requires gem-llm)."""
    import gem

    gem.register(name, entry_point=gem_class(), **env_kwargs)


class BastionGroupFilter:
    """ROLL ``group_filter_cls``: ``filter(...) -> True`` drops the group."""

    def __init__(self, config: Any = None, env_manager_config: Any = None,
                 mode: str = "train") -> None:
        self.mode = mode
        self.stats = {"total": 0, "filtered": 0}

    def filter(self, group_id: int, episode_id: int, group: list[Any]) -> bool:
        self.stats["total"] += 1
        if self.mode == "val":
            return False
        for rollout in group:
            meta = getattr(rollout, "meta_info", None) or {}
            if (meta.get("drop_flag") or meta.get("bastion_flag") == "drop"
                    or meta.get("bastion_exclude")):
                self.stats["filtered"] += 1
                return True
        return False
