"""verl adapter: tool lifecycle driven by scripted policies, output masking."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

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
