"""OpenRLHF adapter: an ``AgentInstance`` for ``--agent_func_path``.

OpenRLHF's ``MultiTurnAgentExecutor`` builds ``AgentInstance()`` (no arguments) per
prompt, awaits ``reset({"observation", "label"}) -> {"observation": str}``, then per
model turn awaits ``step({"observation_text", "action_text", "label",
"sampling_params"})`` and reads ``rewards`` (``.item()`` is called on it),
``scores``, ``environment_feedback``, ``done``, ``sampling_params`` and
``extra_logs``. ``done=True`` ends the episode; per-step ``rewards`` are summed.

Because the instance gets no arguments, configuration comes from the environment:
``BASTION_POLICY`` (policy file), ``BASTION_STATE_DIR`` and ``BASTION_RUN_ID``. The
trajectory flag travels in ``extra_logs`` (``bastion_mask``/``bastion_drop``);
OpenRLHF's ``--dynamic_filtering`` works per group on ``scores``, so ``scores`` is set
below the usual range for dropped trajectories (``DROP_SCORE``); otherwise ``scores``
is the episode's total reward so far (the executor keeps the last step's).

In your agent_func.py::

    from bastion.rl.adapters.openrlhf import agent_instance_class
    AgentInstance = agent_instance_class()

Interfaces read from openrlhf 0.11.2 (openrlhf/utils/agent.py,
examples/python/agent_func.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np

from ..env import BastionEnv
from ._infra import infra_failed_before_start, infra_step, start_episode
from ._text import extract_action, format_observation

__all__ = ["DROP_SCORE", "BastionAgentInstance", "agent_instance_class"]

DROP_SCORE = -1.0


class BastionAgentInstance:
    """The agent-instance contract, framework-free."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        env_kwargs: dict[str, Any] = {
            "policy": os.environ.get("BASTION_POLICY") or None,
            "state_dir": os.environ.get("BASTION_STATE_DIR") or None,
            "run_id": os.environ.get("BASTION_RUN_ID", "openrlhf"),
            "name": "openrlhf",
        }
        env_kwargs.update(kwargs)
        self.env = BastionEnv(**env_kwargs)

    async def reset(self, states: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        options = {"episode_id": states["episode_id"]} if states.get("episode_id") else None
        prompt, _ = await asyncio.to_thread(start_episode, self.env, options)
        return {"observation": f"{states.get('observation', '')}\n{prompt}"}

    async def step(self, states: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        action = extract_action(str(states.get("action_text", "")))
        obs, reward, terminated, truncated, info = (
            infra_step(self.env) if infra_failed_before_start(self.env)
            else await asyncio.to_thread(self.env.step, action))
        done = terminated or truncated
        b = info["bastion"]
        if done:
            await asyncio.to_thread(self.env.close)
        flag = b["flag"]
        # OpenRLHF keeps the *last* step's scores for --dynamic_filtering: the episode
        # total so far, or DROP_SCORE once the trajectory is to be dropped.
        total = self.env.record.total_reward if self.env.record is not None else reward
        # a trajectory left out by rl.exclude (infra-failed, or masked when listed):
        # OpenRLHF filters per group, so its group goes, as for drop
        score = DROP_SCORE if flag == "drop" or b["exclude"] else total
        return {
            "rewards": np.float32(reward),
            "scores": np.float32(score),
            "environment_feedback": "" if done else format_observation(obs),
            "done": done,
            "sampling_params": states.get("sampling_params"),
            "extra_logs": {
                "bastion_violations": np.float32(b["episode_violations"]),
                "bastion_penalty": np.float32(self.env.record.penalty
                                              if self.env.record is not None else b["penalty"]),
                "bastion_mask": np.float32(flag == "mask"),
                "bastion_drop": np.float32(flag == "drop"),
                "bastion_exclude": np.float32(b["exclude"]),
                "bastion_infra_failed": np.float32(b["infra_failed"]),
            },
        }


def agent_instance_class(**env_kwargs: Any) -> type:
    """``BastionAgentInstance`` as a subclass of OpenRLHF's ``AgentInstanceBase``, which
    ``MultiTurnAgentExecutor`` asserts; requires OpenRLHF. ``env_kwargs`` are passed to
    ``BastionEnv`` (the executor itself constructs instances without arguments)."""
    from openrlhf.utils.agent import AgentInstanceBase

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        BastionAgentInstance.__init__(self, **{**env_kwargs, **kwargs})

    return type("AgentInstance", (BastionAgentInstance, AgentInstanceBase),
                {"__init__": __init__, "__module__": __name__})
