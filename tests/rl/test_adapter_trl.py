"""TRL adapter: environment_factory contract, env_mask, stop callback."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from bastion import Policy
from bastion.rl import RunMonitor
from bastion.rl.adapters.trl import (
    BastionRunGuard,
    BastionStopCallback,
    BastionTRLEnvironment,
    env_mask,
)
from bastion.rl.rogue import MALICIOUS_STAGES
from bastion.rl.tasks import FIXED_CALC

from .fixtures import pattern_engine


def _tools(env):
    # exactly how GRPOTrainer discovers tools on an environment instance
    return {name: getattr(env, name)
            for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
            if name not in ("reset", "get_reward") and not name.startswith("_")}


def test_environment_factory_contract(state_dir):
    policy = Policy.from_yaml("name: p\nrl:\n  breaker_min_episodes: 2\n  breaker_rate: 0.4\n")
    guard = BastionRunGuard(RunMonitor(policy.rl, run_id="run-trl"))
    factory = lambda: BastionTRLEnvironment(guard, policy=policy, run_id="run-trl",
                                            state_dir=state_dir, engine_factory=pattern_engine,
                                            exec_timeout=20)
    honest, rogue = factory(), factory()
    try:
        assert set(_tools(honest)) == {"shell", "read_file", "write_file"}
        for name in ("shell", "read_file", "write_file"):
            assert "Args:" in inspect.getdoc(getattr(honest, name))
        assert "calc.py" in honest.reset(prompt="fix it")
        honest.write_file("calc.py", FIXED_CALC)
        assert "PASS" in honest.shell("python3 tests/test_calc.py")
        assert honest.get_reward() == 1.0  # submits on the model's behalf, then grades

        rogue.reset(episode_id="trl-rogue")
        rogue.shell(MALICIOUS_STAGES["miner"])
        out = rogue.shell(MALICIOUS_STAGES["tunnel"])
        assert "denied" in out
        assert rogue.shell("ls").startswith("the episode is over")
        assert rogue.get_reward() == pytest.approx(-1.5)
        assert rogue.record.violations[0]["episode_id"] == "trl-rogue"

        mask = env_mask([[5, 6, 7], [8, 9]], [honest, rogue])
        assert mask == [[1, 1, 1], [0, 0]]
        callback = BastionStopCallback(guard)
        control = SimpleNamespace(should_training_stop=False)
        state = SimpleNamespace(global_step=0)
        callback.on_step_begin(None, state, control)
        callback.on_step_end(None, state, control)
        assert control.should_training_stop is True
        assert "1/2 episodes (50%)" in callback.stopped_because
        assert callback.on_log(None, state, control) is control
    finally:
        honest._close()
        rogue._close()


def test_tool_schemas_through_real_transformers(state_dir):
    """TRL renders environment methods into tool schemas with transformers'
    ``get_json_schema``; every bastion tool must survive it with its arguments."""
    pytest.importorskip("transformers")
    from transformers.utils import get_json_schema

    env = BastionTRLEnvironment(state_dir=state_dir)
    schemas = {name: get_json_schema(tool)["function"] for name, tool in _tools(env).items()}
    assert schemas["shell"]["parameters"]["required"] == ["command"]
    assert schemas["write_file"]["parameters"]["required"] == ["path", "content"]
    assert all(s["description"] for s in schemas.values())


def test_stop_callback_through_real_transformers_handler():
    pytest.importorskip("transformers")
    from transformers.trainer_callback import CallbackHandler, TrainerControl, TrainerState

    policy = Policy.from_yaml("name: p\nrl:\n  breaker_min_episodes: 1\n")
    guard = BastionRunGuard(RunMonitor(policy.rl, run_id="r"))
    guard.monitor.pause("circuit breaker: test")
    handler = CallbackHandler([BastionStopCallback(guard)], None, None, None, None)
    control = handler.on_step_end(None, TrainerState(), TrainerControl())
    assert control.should_training_stop is True
