"""verl (volcengine/verl) adapter: a ``BaseTool`` and ``AgentLoopOutput`` masking.

In verl's ``ToolAgentLoop`` each tool call goes through
``BaseTool.create(instance_id, **kw) -> (instance_id, ToolResponse)``,
``execute(instance_id, parameters, **kw) -> (ToolResponse, step_reward, metrics)``,
``calc_reward`` and ``release``. ``BastionShellTool`` runs each call in the
trajectory's bastion session (one per trajectory, not per tool instance: verl's loop
creates and releases an instance around every call, see ``BastionToolCore``); the step reward carries the containment penalty (the
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
import contextlib
import contextvars
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from ...errors import BastionError, PolicyError
from ..env import BastionEnv
from ..records import EpisodeRecord
from ..shaping import excluded

__all__ = ["SHELL_TOOL_SCHEMA", "TRAJECTORY", "BastionToolCore", "agent_loop_class",
           "annotate_output", "verl_tool_class"]

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


# The trajectory the current coroutine works for. ``BastionToolAgentLoop.run`` (or
# ``BastionToolCore.trajectory``) sets it; the tool-call tasks verl starts with
# ``asyncio.gather`` inherit a copy of the context, so every ``create`` of one
# trajectory sees the same key whatever instance id verl makes up per call.
TRAJECTORY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bastion_verl_trajectory", default=None)


def _trajectory_key(kwargs: dict[str, Any]) -> str | None:
    """Which trajectory a ``create`` belongs to: verl's own per-trajectory data when
    it passes some (``agent_data.request_id``, newer agent loops), else the one set
    by ``BastionToolAgentLoop``/``BastionToolCore.trajectory``, else an explicit
    ``create_kwargs["trajectory_id"]``. None: no trajectory is known, and the
    instance id is the only key (a session per tool instance)."""
    agent_data = kwargs.get("agent_data")
    request_id = getattr(agent_data, "request_id", None)
    if request_id:
        return f"req-{request_id}"
    current = TRAJECTORY.get()
    if current:
        return current
    create_kwargs = kwargs.get("create_kwargs", kwargs) or {}
    explicit = create_kwargs.get("trajectory_id") if isinstance(create_kwargs, dict) else None
    return str(explicit) if explicit else None


class _Trajectory:
    """One trajectory's environment, shared by every tool instance verl creates for
    it; calls into it are serialised (verl may run parallel tool calls)."""

    def __init__(self, env: BastionEnv, *, scoped: bool) -> None:
        self.env = env
        self.scoped = scoped  # ends with the trajectory, not with the instance's release
        self.lock = asyncio.Lock()
        self.done = False
        self.instances: set[str] = set()


class BastionToolCore:
    """verl's tool lifecycle, framework-free: one ``BastionEnv`` (one sandbox) per
    *trajectory*, however often verl creates and releases tool instances.

    verl's ``ToolAgentLoop`` calls ``create -> execute -> release`` around every
    single tool call, with a fresh instance id each time; a session per instance
    would lose the workspace between two calls of the same trajectory. So
    ``create`` maps the instance to its trajectory (``_trajectory_key``) and reuses
    that trajectory's session; ``release`` only forgets the instance, and the
    session is closed when the trajectory ends (``end_trajectory``, called by
    ``BastionToolAgentLoop`` or by leaving ``trajectory()``). A ``create`` with no
    known trajectory falls back to a session per instance, closed on ``release``
    (verl's older ``create`` once per episode)."""

    def __init__(self, env_factory: Callable[[], BastionEnv]) -> None:
        self._env_factory = env_factory
        self._trajectories: dict[str, _Trajectory] = {}
        self._by_instance: dict[str, str] = {}  # instance id -> trajectory key
        self._opening: dict[str, asyncio.Lock] = {}
        self.records: dict[str, EpisodeRecord] = {}  # by trajectory key
        self.opened = 0  # sessions opened (one per trajectory)

    @contextlib.asynccontextmanager
    async def trajectory(self, key: str | None = None) -> AsyncIterator[str]:
        """Run one trajectory: every tool call made inside (and in tasks started
        inside) shares one session, closed on exit. Yields the key."""
        key = key or f"traj-{uuid.uuid4().hex}"
        token = TRAJECTORY.set(key)
        try:
            yield key
        finally:
            TRAJECTORY.reset(token)
            await self.end_trajectory(key)

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, str]:
        instance_id = instance_id or str(uuid.uuid4())
        create_kwargs = kwargs.get("create_kwargs", kwargs) or {}
        key = _trajectory_key(kwargs)
        scoped = key is not None
        key = key or instance_id
        lock = self._opening.setdefault(key, asyncio.Lock())
        prompt = ""
        async with lock:  # two parallel first calls of a trajectory open one session
            traj = self._trajectories.get(key)
            fresh = traj is None
            if traj is None:
                env = self._env_factory()
                episode_id = str(create_kwargs.get("episode_id") or key)
                try:
                    prompt, _ = await asyncio.to_thread(env.reset,
                                                        options={"episode_id": episode_id})
                except PolicyError:
                    raise
                except BastionError as exc:
                    # the sandbox could not be built: not the agent's doing. verl's
                    # loop gets the error (and stops the trajectory); the record says
                    # infra_failed so annotate_output leaves it out
                    self.records[key] = _infra_record(env, episode_id,
                                                      f"session setup failed: {exc}")
                    raise
                traj = self._trajectories[key] = _Trajectory(env, scoped=scoped)
                self.opened += 1
        traj.instances.add(instance_id)
        self._by_instance[instance_id] = key
        return instance_id, prompt if fresh else ""

    async def execute(self, instance_id: str, parameters: dict[str, Any],
                      **kwargs: Any) -> tuple[str, float, dict[str, Any]]:
        traj = self._trajectories[self._by_instance[instance_id]]
        async with traj.lock:
            if traj.done:
                return "the episode is over: bastion ended it", 0.0, {"bastion_episode_over": 1}
            action = parameters.get("command", "")
            obs, reward, terminated, truncated, info = await asyncio.to_thread(
                traj.env.step, str(action))
            traj.done = terminated or truncated
        b = info["bastion"]
        return obs, reward, {"bastion": b, "bastion_violations": b["violations"],
                             "bastion_penalty": b["penalty"],
                             "bastion_infra_failed": int(b["infra_failed"]),
                             "bastion_exclude": int(b["exclude"])}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        key = self._by_instance.get(instance_id)
        traj = self._trajectories.get(key) if key is not None else None
        record = traj.env.record if traj is not None else self.records.get(key or instance_id)
        return record.total_reward if record else 0.0

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        key = self._by_instance.pop(instance_id, None)
        if key is None:
            return
        traj = self._trajectories.get(key)
        if traj is None:
            return
        traj.instances.discard(instance_id)
        if not traj.scoped:
            await self.end_trajectory(key)  # no trajectory known: the instance was it

    async def end_trajectory(self, key: str) -> EpisodeRecord | None:
        """The trajectory is over: close its session; returns its record (also kept
        in ``records``), or None if it never made a tool call."""
        traj = self._trajectories.pop(key, None)
        self._opening.pop(key, None)
        if traj is None:
            return self.records.get(key)
        for instance in traj.instances:
            self._by_instance.pop(instance, None)
        async with traj.lock:
            await asyncio.to_thread(traj.env.close)
        if traj.env.record is not None:
            self.records[key] = traj.env.record
        return traj.env.record

    def live_trajectories(self) -> list[str]:
        """Trajectories whose session is open."""
        return list(self._trajectories)


def _infra_record(env: BastionEnv, episode_id: str, reason: str) -> EpisodeRecord:
    rl = env.policy.rl
    return EpisodeRecord(run_id=env.run_id, episode_id=episode_id, session_id="",
                         policy_hash=env.policy.hash, infra_reason=reason,
                         excluded=excluded("keep", True, rl))


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


def agent_loop_class(name: str = "bastion_tool_agent") -> type:
    """verl's ``ToolAgentLoop``, registered as ``name`` (set
    ``actor_rollout_ref.rollout.agent.default_agent_loop`` or a row's ``agent_name``
    to it), where each ``run`` is one trajectory: every tool call it makes, through
    however many ``create``/``release`` pairs, runs in one bastion session, closed
    when the run ends; the output is then annotated (``annotate_output``).
    Requires verl."""
    from verl.experimental.agent_loop.agent_loop import register
    from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop

    class BastionToolAgentLoop(ToolAgentLoop):  # type: ignore[misc, valid-type]
        async def run(self, *args: Any, **kwargs: Any) -> Any:
            key = f"traj-{uuid.uuid4().hex}"
            token = TRAJECTORY.set(key)
            records: list[EpisodeRecord] = []
            try:
                output = await super().run(*args, **kwargs)
            finally:
                TRAJECTORY.reset(token)
                for tool in self.tools.values():
                    core = getattr(tool, "core", None)
                    if isinstance(core, BastionToolCore):
                        record = await core.end_trajectory(key)
                        if record is not None:
                            records.append(record)
            for record in records:
                annotate_output(output, record)
            return output

    register(name)(BastionToolAgentLoop)
    return BastionToolAgentLoop


def annotate_output(output: Any, record: EpisodeRecord) -> Any:
    """Apply an episode's verdicts to a verl ``AgentLoopOutput`` (or anything with
    ``response_mask``, ``reward_score`` and ``extra_fields``), in place. A
    trajectory left out of group statistics (``record.excluded``: ``rl.exclude``,
    e.g. its sandbox died with its node) gets no loss either, and
    ``extra_fields["bastion_exclude"] = 1`` so a group filter
    (``algorithm.filter_groups``) or the advantage step can leave it out."""
    if record.flag in ("mask", "drop") or record.excluded:
        output.response_mask = [0] * len(output.response_mask)
    if getattr(output, "reward_score", None) is not None:
        output.reward_score = float(output.reward_score) + record.penalty
    extra = dict(getattr(output, "extra_fields", {}) or {})
    extra.update({
        "bastion_flag": record.flag,
        "bastion_drop": int(record.flag == "drop"),
        "bastion_exclude": int(record.excluded),
        "bastion_infra_failed": int(record.infra_failed),
        "bastion_violations": len(record.violations),
        "bastion_penalty": record.penalty,
        "bastion_episode_id": record.episode_id,
    })
    output.extra_fields = extra
    return output
