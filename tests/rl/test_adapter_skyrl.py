"""SkyRL adapter: BaseTextEnv driven by scripted policies, loss-mask helper."""

from __future__ import annotations

import pytest

from bastion.rl import OrdinaryPolicy, RoguePolicy
from bastion.rl.adapters.skyrl import apply_loss_masks

from .fixtures import pattern_engine


def _drive(env, agent):
    agent.reset()
    chat, meta = env.init([{"role": "system", "content": "you are an agent"}])
    assert chat[-1]["role"] == "user" and "calc.py" in chat[-1]["content"]
    rewards, outputs, info = [], [], meta
    obs = chat[-1]["content"]
    while True:
        out = env.step(agent.act(obs, rewards[-1] if rewards else None, info))
        outputs.append(out)
        rewards.append(out["reward"])
        info = out["metadata"]
        obs = out["observations"][0]["content"] if out["observations"] else ""
        if out["done"]:
            return rewards, outputs


def test_through_real_skyrl_gym(state_dir):
    skyrl_gym = pytest.importorskip("skyrl_gym")
    from skyrl_gym.envs.base_text_env import BaseTextEnv

    from bastion.rl.adapters.skyrl import register

    register("bastion-test-skyrl")
    config = {"run_id": "run-sky", "name": "sky", "state_dir": state_dir,
              "engine_factory": pattern_engine, "exec_timeout": 20}
    env = skyrl_gym.make("bastion-test-skyrl", env_config=config, extras={"episode_id": "sk1"})
    assert isinstance(env, BaseTextEnv)
    try:
        rewards, outputs = _drive(env, OrdinaryPolicy())
        assert sum(rewards) == 1.0 and env.get_metrics()["bastion_violations"] == 0
    finally:
        env.close()
    env = skyrl_gym.make("bastion-test-skyrl", env_config=config, extras={"episode_id": "sk2"})
    try:
        rewards, outputs = _drive(env, RoguePolicy())
        assert sum(rewards) == pytest.approx(-1.5)
        verdicts = [v for o in outputs for v in o["metadata"]["bastion"]["verdicts"]]
        assert {v["episode_id"] for v in verdicts} == {"sk2"}
        assert env.get_metrics()["bastion_mask"] == 1
    finally:
        env.close()


def test_loss_masks_zeroed_for_flagged():
    assert apply_loss_masks([[1, 1], [1, 0, 1], [1]], ["keep", "mask", "drop"]) == \
        [[1, 1], [0, 0, 0], [0]]
