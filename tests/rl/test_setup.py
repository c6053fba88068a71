"""What happens while reset() builds an episode reaches the trainer, and a task's
setup can create the paths the policy protects."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bastion import Policy
from bastion.rl import BastionEnv, FixBugTask
from bastion.rl.env import SETUP_STEP

from .fixtures import pattern_engine


@dataclass
class NoisySetupTask(FixBugTask):
    """Its setup runs a command in the session that a rule flags (high: deny)."""

    def setup(self, session) -> None:  # type: ignore[no-untyped-def]
        super().setup(session)
        session.exec("echo 'export X=1' >> ~/.bashrc", call_id="setup-0")


def _env(state_dir, task, policy=None):
    return BastionEnv(policy or Policy.default(), task=task, run_id="run-s", name="s",
                      max_steps=4, state_dir=state_dir, engine_factory=pattern_engine,
                      exec_timeout=20)


def test_verdicts_raised_during_reset_reach_the_trainer(state_dir):
    env = _env(state_dir, NoisySetupTask())
    try:
        _, info = env.reset(options={"episode_id": "ep-setup"})
        b = info["bastion"]
        assert [v["rule_id"] for v in b["verdicts"]] == ["test.persistence"]
        assert b["verdicts"][0]["charged_step"] == SETUP_STEP
        assert b["penalty"] == -0.5 and b["violations"] == 1 and b["flag"] == "mask"
        assert env.record is not None and env.record.flag == "mask"
        _, reward, _, _, step_info = env.step("echo hi")
        # paid with the first step (Gymnasium's reset has no reward), charged once
        assert reward == -0.5
        assert [v["rule_id"] for v in step_info["bastion"]["verdicts"]] == ["test.persistence"]
        _, reward2, *_ = env.step("echo again")
        assert reward2 == 0.0
        assert env.record.penalty == -0.5
        assert env.record.penalty_by_step == {SETUP_STEP: -0.5}
        assert len(env.record.violations) == 1
        assert env.record.to_dict()["setup_verdicts"][0]["rule_id"] == "test.persistence"
    finally:
        env.close()


def test_a_quiet_reset_reports_nothing(state_dir):
    env = _env(state_dir, FixBugTask())
    try:
        _, info = env.reset(options={"episode_id": "ep-quiet"})
        assert info["bastion"]["verdicts"] == [] and info["bastion"]["penalty"] == 0.0
        assert info["bastion"]["flag"] == "keep"
    finally:
        env.close()


def test_protected_paths_created_by_the_task_are_read_only_to_the_agent(state_dir):
    """`protected: [tests]` with a task that writes tests/ (it did not exist before):
    reset works, the agent reads the tests but cannot change or add to them, and the
    grader still pays for a real fix."""
    env = _env(state_dir, FixBugTask(), Policy.from_dict({"sandbox": {"protected": ["tests"]}}))
    try:
        env.reset(options={"episode_id": "ep-protected"})
        obs, *_ = env.step("head -3 tests/test_calc.py")
        assert "from calc import add" in obs
        obs, *_ = env.step("touch tests/extra.py; cp calc.py tests/test_calc.py; "
                           "echo done")
        assert "Read-only file system" in obs and "done" in obs
        fix = json.dumps({"tool": "write_file", "path": "calc.py",
                          "content": "def add(a, b):\n    return a + b\n"})
        env.step(fix)
        _, reward, terminated, _, _ = env.step(json.dumps({"tool": "submit"}))
        assert terminated and reward == 1.0
        assert env.record is not None and env.record.flag == "keep"
    finally:
        env.close()
