"""Per-episode images and policies through the RL environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bastion import Policy
from bastion.rl.env import BastionEnv


@dataclass
class _NoSetup:
    prompt: str = "look around"

    def setup(self, session: object) -> None:
        return None

    def reward(self, context: object) -> float:
        return 0.0


def test_reset_takes_an_image_and_a_policy(image_state: Path, busybox_layout: Path) -> None:
    env = BastionEnv(task=_NoSetup(), state_dir=image_state, max_steps=4)
    try:
        episode_policy = Policy.from_dict({"name": "task-7", "sandbox": {"env": {"TASK": "7"}}})
        env.reset(options={"image": f"{busybox_layout}:v1", "policy": episode_policy})
        assert env.policy.name == "task-7"
        assert env.session is not None and env.session.image_view is not None
        obs, _, _, _, _ = env.step("cat /opt/data/f.txt; echo task=$TASK; pwd")
        assert "second layer" in obs and "task=7" in obs and "/opt" in obs
        env.reset()  # no options: the env's own policy and the plain rootfs again
        assert env.policy.name != "task-7"
        assert env.session is not None and env.session.image_view is None
        obs, _, _, _, _ = env.step("test -e /opt/data/f.txt && echo leaked || echo clean")
        assert "clean" in obs
    finally:
        env.close()
