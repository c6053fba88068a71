"""Every adapter carries an infra failure to its trainer: a sandbox killed from
outside mid-episode gives no penalty, and the trajectory is left out by each
framework's own means (loss masks, env_mask, scores, group filters, output masks)
under the default ``rl.exclude: [infra_failed]``."""

from __future__ import annotations

import asyncio
import os
import signal
from types import SimpleNamespace

from bastion.rl.adapters.openrlhf import DROP_SCORE, BastionAgentInstance
from bastion.rl.adapters.roll import BastionGemEnv, BastionGroupFilter
from bastion.rl.adapters.skyrl import _BastionTextEnvMixin, apply_loss_masks
from bastion.rl.adapters.trl import BastionTRLEnvironment, env_mask
from bastion.rl.adapters.verl import BastionToolCore, annotate_output
from bastion.rl.env import BastionEnv

from ..conftest import wait_for
from .fixtures import pattern_engine


def _lose_sandbox(env: BastionEnv) -> None:
    """The host kills the sandbox's supervisor by pid while no call runs."""
    session = env.session
    assert session is not None and session.sandbox is not None
    os.kill(session.sandbox.supervisor_pid, signal.SIGKILL)
    assert wait_for(lambda: session.ended, timeout=10)


def _kw(state_dir, name):
    return {"run_id": "run-infra-adapters", "name": name, "state_dir": state_dir,
            "engine_factory": pattern_engine, "exec_timeout": 20}


def test_skyrl_and_roll(state_dir):
    sky = _BastionTextEnvMixin()
    sky._setup(_kw(state_dir, "sky"), {"episode_id": "sky-infra"})
    try:
        sky.init([{"role": "system", "content": "agent"}])
        assert not sky.step("echo one")["done"]
        _lose_sandbox(sky.env)
        out = sky.step("echo two")
        b = out["metadata"]["bastion"]
        assert out["done"] and out["reward"] == 0.0
        assert b["infra_failed"] and b["exclude"] and b["flag"] == "keep"
        metrics = sky.get_metrics()
        assert metrics["bastion_infra_failed"] == 1 and metrics["bastion_exclude"] == 1
        assert metrics["bastion_penalty"] == 0.0
        masks = apply_loss_masks([[1, 1], [1, 1]], ["keep", "keep"], [False, b["exclude"]])
        assert masks == [[1, 1], [0, 0]]
    finally:
        sky.close()

    gem = BastionGemEnv(**_kw(state_dir, "roll"))
    try:
        gem.reset(seed=1, episode_id="roll-infra")
        gem.step("echo one")
        _lose_sandbox(gem.env)
        _, reward, terminated, _, info = gem.step("echo two")
        assert terminated and reward == 0.0
        assert info["bastion_infra_failed"] == 1.0 and info["bastion_exclude"] == 1.0
        assert info["bastion_penalty"] == 0.0 and info["bastion_mask"] == 0.0
        rollout = SimpleNamespace(meta_info={"bastion_exclude": info["bastion_exclude"]})
        ok = SimpleNamespace(meta_info={})
        assert BastionGroupFilter(None, None, "train").filter(0, 0, [ok, rollout]) is True
    finally:
        gem.close()


def test_trl_openrlhf_and_verl(state_dir, monkeypatch):
    trl = BastionTRLEnvironment(**_kw(state_dir, "trl"))
    try:
        trl.reset(episode_id="trl-infra")
        trl.shell("echo one")
        _lose_sandbox(trl._env)
        trl.shell("echo two")
        assert trl.record is not None and trl.record.infra_failed and trl.record.excluded
        assert trl.get_reward() == 0.0
        assert env_mask([[1, 2]], [trl]) == [[0, 0]]
    finally:
        trl._close()

    monkeypatch.setenv("BASTION_STATE_DIR", str(state_dir))
    inst = BastionAgentInstance(engine_factory=pattern_engine, exec_timeout=20)

    async def openrlhf():
        await inst.reset({"observation": "solve", "label": "l", "episode_id": "orl-infra"})
        await inst.step({"action_text": "```bash\necho one\n```"})
        _lose_sandbox(inst.env)
        return await inst.step({"action_text": "```bash\necho two\n```"})

    result = asyncio.run(openrlhf())
    logs = result["extra_logs"]
    assert result["done"] and result["rewards"].item() == 0.0
    assert logs["bastion_infra_failed"].item() == 1.0 and logs["bastion_exclude"].item() == 1.0
    assert result["scores"].item() == DROP_SCORE  # its group leaves dynamic filtering

    core = BastionToolCore(lambda: BastionEnv(**_kw(state_dir, "verl")))

    async def verl():
        async with core.trajectory("verl-infra"):
            iid, _ = await core.create(create_kwargs={})
            await core.execute(iid, {"command": "echo one"})
            await core.release(iid)
            _lose_sandbox(core._trajectories["verl-infra"].env)
            iid, _ = await core.create(create_kwargs={})
            _, reward, metrics = await core.execute(iid, {"command": "echo two"})
            await core.release(iid)
            return reward, metrics

    reward, metrics = asyncio.run(verl())
    assert reward == 0.0 and metrics["bastion_infra_failed"] == 1
    output = SimpleNamespace(response_mask=[1, 1, 1], reward_score=None, extra_fields={})
    annotate_output(output, core.records["verl-infra"])
    assert output.response_mask == [0, 0, 0] and output.extra_fields["bastion_exclude"] == 1


def test_setup_failure_is_an_infra_failed_episode_in_every_adapter(state_dir, tmp_path,
                                                                   monkeypatch):
    """The sandbox cannot be built (the task's image is missing): each adapter gives
    its trainer a one-step, unpenalised, excluded episode instead of an exception
    that would take the whole rollout batch down."""
    from bastion import Policy

    policy = Policy.from_dict({"sandbox": {"image": str(tmp_path / "no-such-image")}})
    kw = {**_kw(state_dir, "setup"), "policy": policy}

    sky = _BastionTextEnvMixin()
    sky._setup(kw, {"episode_id": "sky-setup"})
    chat, meta = sky.init([])
    assert meta["bastion"]["infra_failed"] and "could not be started" in chat[-1]["content"]
    out = sky.step("echo hi")
    assert out["done"] and out["reward"] == 0.0 and out["metadata"]["bastion"]["exclude"]
    assert sky.get_metrics()["bastion_infra_failed"] == 1
    sky.close()

    gem = BastionGemEnv(**kw)
    gem.reset(seed=1, episode_id="roll-setup")
    _, reward, terminated, _, info = gem.step("echo hi")
    assert terminated and reward == 0.0 and info["bastion_exclude"] == 1.0
    gem.close()

    trl = BastionTRLEnvironment(**kw)
    assert "could not be started" in trl.reset(episode_id="trl-setup")
    assert "could not be started" in trl.shell("echo hi")
    assert trl.get_reward() == 0.0 and env_mask([[1]], [trl]) == [[0]]

    monkeypatch.setenv("BASTION_STATE_DIR", str(state_dir))
    inst = BastionAgentInstance(policy=policy, engine_factory=pattern_engine)

    async def openrlhf():
        await inst.reset({"observation": "solve", "episode_id": "orl-setup"})
        return await inst.step({"action_text": "echo hi"})

    result = asyncio.run(openrlhf())
    assert result["done"] and result["scores"].item() == DROP_SCORE
    assert result["extra_logs"]["bastion_infra_failed"].item() == 1.0
