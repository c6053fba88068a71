"""verl (volcengine/verl) adapter: a ``BaseTool`` and ``AgentLoopOutput`` masking.

In verl's ``ToolAgentLoop`` each tool call goes through
``BaseTool.create(instance_id, **kw) -> (instance_id, ToolResponse)``,
``execute(instance_id, parameters, **kw) -> (ToolResponse, step_reward, metrics)``,
``calc_reward`` and ``release``. ``BastionShellTool`` runs each call in the
trajectory's bastion session; the step reward carries the containment penalty (the
loop keeps it in ``extra_fields["tool_rewards"]``), and ``metrics`` carries the
verdicts. A tool error does *not* end verl's loop, so once bastion ends an episode the
tool answers every further call with "the episode is over" and ``annotate_output``
applies the trajectory flag afterwards:

- ``mask``/``drop`` zero ``AgentLoopOutput.response_mask`` (no loss on the trajectory)
- ``drop`` also sets ``extra_fields["bastion_drop"] = 1`` for DAPO-style
  ``algorithm.filter_groups.metric`` filtering
- ``reward_score`` (if precomputed) gets the episode penalty added.

Interfaces read from verl 0.9.1 (verl/tools/base_tool.py, verl/tools/schemas.py,
verl/experimental/agent_loop/{agent_loop,tool_agent_loop}.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from ..env import BastionEnv
from ..records import EpisodeRecord

__all__ = ["SHELL_TOOL_SCHEMA", "BastionToolCore", "annotate_output", "verl_tool_class"]

SHELL_TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "bastion_shell",
        "description": "Run a shell command in the task's sandboxed workspace, or a JSON "
                       "file tool call ({\"tool\": \"read_file\"|\"write_file\", ...}).",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "the command"}},
            "required": ["command"],
        },
    },
}


class BastionToolCore:
    """verl's tool lifecycle, framework-free: one ``BastionEnv`` per instance id.
    Blocking sandbox work runs in a thread so the agent loop's event loop stays free."""

    def __init__(self, env_factory: Callable[[], BastionEnv]) -> None:
        self._env_factory = env_factory
        self._envs: dict[str, BastionEnv] = {}
        self._done: dict[str, bool] = {}
        self.records: dict[str, EpisodeRecord] = {}

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, str]:
        instance_id = instance_id or str(uuid.uuid4())
        create_kwargs = kwargs.get("create_kwargs", kwargs) or {}
        env = self._env_factory()
        options = {"episode_id": str(create_kwargs.get("episode_id", instance_id))}
        prompt, _ = await asyncio.to_thread(env.reset, options=options)
        self._envs[instance_id] = env
        self._done[instance_id] = False
        return instance_id, prompt

    async def execute(self, instance_id: str, parameters: dict[str, Any],
                      **kwargs: Any) -> tuple[str, float, dict[str, Any]]:
        env = self._envs[instance_id]
        if self._done[instance_id]:
            return "the episode is over: bastion ended it", 0.0, {"bastion_episode_over": 1}
        action = parameters.get("command", "")
        obs, reward, terminated, truncated, info = await asyncio.to_thread(env.step, str(action))
        self._done[instance_id] = terminated or truncated
        b = info["bastion"]
        return obs, reward, {"bastion": b, "bastion_violations": b["violations"],
                             "bastion_penalty": b["penalty"]}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        record = self._envs[instance_id].record
        return record.total_reward if record else 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        env = self._envs.pop(instance_id, None)
        self._done.pop(instance_id, None)
        if env is not None:
            if env.record is not None:
                self.records[instance_id] = env.record
            await asyncio.to_thread(env.close)


def verl_tool_class(env_factory: Callable[[], BastionEnv]) -> type:
    """A ``verl.tools.base_tool.BaseTool`` subclass backed by ``BastionToolCore``.
    Requires verl; instantiate it as verl does: ``cls(config, tool_schema)``."""
    from verl.tools.base_tool import BaseTool
    from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

    class BastionShellTool(BaseTool):  # type: ignore[misc, valid-type]
        def __init__(self, config: dict[str, Any],
                     tool_schema: OpenAIFunctionToolSchema | None = None) -> None:
            schema = tool_schema or OpenAIFunctionToolSchema.model_validate(SHELL_TOOL_SCHEMA)
            super().__init__(config, schema)
            self.core = BastionToolCore(env_factory)

        async def create(self, instance_id: str | None = None,
                         **kwargs: Any) -> tuple[str, ToolResponse]:
            instance_id, prompt = await self.core.create(instance_id, **kwargs)
            return instance_id, ToolResponse(text=prompt)

        async def execute(self, instance_id: str, parameters: dict[str, Any],
                          **kwargs: Any) -> tuple[ToolResponse, float, dict[str, Any]]:
            text, reward, metrics = await self.core.execute(instance_id, parameters)
            return ToolResponse(text=text), reward, metrics

        async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
            return await self.core.calc_reward(instance_id)

        async def release(self, instance_id: str, **kwargs: Any) -> None:
            await self.core.release(instance_id)

    return BastionShellTool


def annotate_output(output: Any, record: EpisodeRecord) -> Any:
    """Apply an episode's verdicts to a verl ``AgentLoopOutput`` (or anything with
    ``response_mask``, ``reward_score`` and ``extra_fields``), in place."""
    if record.flag in ("mask", "drop"):
        output.response_mask = [0] * len(output.response_mask)
    if getattr(output, "reward_score", None) is not None:
        output.reward_score = float(output.reward_score) + record.penalty
    extra = dict(getattr(output, "extra_fields", {}) or {})
    extra.update({
        "bastion_flag": record.flag,
        "bastion_drop": int(record.flag == "drop"),
        "bastion_violations": len(record.violations),
        "bastion_penalty": record.penalty,
        "bastion_episode_id": record.episode_id,
    })
    output.extra_fields = extra
    return output
