"""ROLL / GEM adapter driven by scripted policies."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bastion.rl import OrdinaryPolicy, RoguePolicy
from bastion.rl.adapters.roll import BastionGemEnv, BastionGroupFilter

from .fixtures import pattern_engine


def _drive(env, agent):
    agent.reset()
    obs, info = env.reset(seed=7, episode_id=f"roll-{agent.name}")
    reward, infos, total = None, [], 0.0
    while True:
        # GEM infos are flat numbers; the scripted agent reads bastion's own info
        action = agent.act(obs, reward, {"bastion": env.last_bastion_info})
        obs, reward, terminated, truncated, info = env.step(f"```bash\n{action}\n```"
                                                            if not action.startswith("{")
                                                            else action)
        infos.append(info)
        total += reward
        if terminated or truncated:
            return infos, total


def test_gem_contract_with_scripted_policies(state_dir):
    kw = {"run_id": "run-roll", "name": "roll", "state_dir": state_dir,
          "engine_factory": pattern_engine, "exec_timeout": 20}
    env = BastionGemEnv(**kw)
    try:
        infos, total = _drive(env, OrdinaryPolicy())
        assert total == 1.0 and all(i["bastion_violations"] == 0 for i in infos)
        assert all(isinstance(v, float) for i in infos for v in i.values())  # ROLL metrics
        infos, total = _drive(env, RoguePolicy())
        assert infos[-1]["bastion_terminated"] == 1.0 and infos[-1]["bastion_mask"] == 1.0
        assert total == pytest.approx(-1.5)
        assert env.flag == "mask"
    finally:
        env.close()
    with pytest.raises(ValueError):
        env.spawn(same_state=True)


def test_group_filter_drops_flagged_groups():
    f = BastionGroupFilter(None, None, "train")
    ok = SimpleNamespace(meta_info={})
    bad = SimpleNamespace(meta_info={"bastion_flag": "drop"})
    assert f.filter(0, 0, [ok, ok]) is False
    assert f.filter(1, 0, [ok, bad]) is True
    assert BastionGroupFilter(None, None, "val").filter(1, 0, [bad]) is False
    assert f.stats == {"total": 2, "filtered": 1}


def test_through_real_gem(state_dir):
    gem = pytest.importorskip("gem")
    from bastion.rl.adapters.roll import register

    register("bastion-test", run_id="run-gem", state_dir=state_dir,
             engine_factory=pattern_engine)
    env = gem.make("bastion-test")
    assert isinstance(env, gem.Env)
    try:
        _, total = _drive(env, OrdinaryPolicy())
        assert total == 1.0
    finally:
        env.close()
