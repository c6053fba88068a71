"""OpenRLHF adapter: the AgentInstance contract, driven like MultiTurnAgentExecutor."""

from __future__ import annotations

import asyncio

import pytest

from bastion.rl import OrdinaryPolicy, RoguePolicy
from bastion.rl.adapters.openrlhf import BastionAgentInstance, agent_instance_class

from .fixtures import pattern_engine


async def _execute(instance, agent, label="ep"):
    """The loop of openrlhf.utils.agent.MultiTurnAgentExecutor.execute, minus the LLM."""
    agent.reset()
    reset = await instance.reset({"observation": "Human: solve the task", "label": label,
                                  "episode_id": label})
    observation_text = reset["observation"]
    total_reward, extra_logs, steps, info = 0.0, {}, 0, {}
    last = None
    while True:
        action = agent.act(observation_text, last, info)
        action_text = f"<tool_call>{action}</tool_call>" if action.startswith("{") \
            else f"Let me run:\n```bash\n{action}\n```"
        result = await instance.step({"observation_text": observation_text,
                                      "action_text": action_text, "label": label,
                                      "sampling_params": None})
        total_reward += result["rewards"].item()
        last = result["rewards"].item()
        extra_logs = result["extra_logs"]
        observation_text += action_text + result["environment_feedback"]
        steps += 1
        if result["done"]:
            return total_reward, result, extra_logs, steps


def _instance(state_dir, monkeypatch):
    monkeypatch.setenv("BASTION_STATE_DIR", str(state_dir))
    monkeypatch.setenv("BASTION_RUN_ID", "run-orlhf")
    return BastionAgentInstance(engine_factory=pattern_engine, exec_timeout=20)


def test_agent_instance_contract(state_dir, monkeypatch):
    total, _, logs, steps = asyncio.run(_execute(_instance(state_dir, monkeypatch),
                                                    OrdinaryPolicy(), "o1"))
    assert total == 1.0 and steps == 5 and logs["bastion_violations"].item() == 0
    inst = _instance(state_dir, monkeypatch)
    total, _, logs, steps = asyncio.run(_execute(inst, RoguePolicy(), "r1"))
    assert total == pytest.approx(-1.5)
    assert logs["bastion_mask"].item() == 1.0 and logs["bastion_violations"].item() == 2
    assert inst.env.record.run_id == "run-orlhf" and inst.env.record.episode_id == "r1"
    assert inst.env.session is None  # closed when done


def test_through_real_openrlhf_base(state_dir, monkeypatch):
    pytest.importorskip("openrlhf.utils.agent")
    from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

    monkeypatch.setenv("BASTION_STATE_DIR", str(state_dir))
    cls = agent_instance_class(engine_factory=pattern_engine)
    assert issubclass(cls, AgentInstanceBase)
    MultiTurnAgentExecutor(cls)  # asserts the subclass relation itself
    total, *_ = asyncio.run(_execute(cls(), RoguePolicy(), "r2"))
    assert total == pytest.approx(-1.5)
