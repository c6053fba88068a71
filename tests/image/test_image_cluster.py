"""Per-episode images and policies in cluster episode specs (NodeService, no Ray)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bastion import Policy
from bastion.cluster import EpisodeSpec, NodeService


@dataclass
class _Look:
    name: str = "look"
    seen: list[str] = field(default_factory=list)
    _n: int = 0

    def reset(self) -> None:
        self._n = 0

    def act(self, observation: str, reward: float | None, info: dict) -> str:
        self.seen.append(observation)
        self._n += 1
        if self._n == 1:
            return "cat /opt/data/f.txt 2>&1; echo task=$TASK"
        return json.dumps({"tool": "submit"})


def test_episode_spec_image_and_policy(image_state: Path, busybox_layout: Path) -> None:
    service = NodeService("node-img", run_id="run-img", state_dir=str(image_state),
                          policy=Policy.default(), env_options={"exec_timeout": 30}, slots=1)
    try:
        agent = _Look()
        policy = Policy.from_dict({"name": "task-9", "sandbox": {"env": {"TASK": "9"}}})
        result = service.run_episode(EpisodeSpec("img-1", agent, image=f"{busybox_layout}:v1",
                                                 policy=policy))
        assert result["episode_id"] == "img-1"
        assert result["policy_hash"] == policy.hash
        assert any("second layer" in o and "task=9" in o for o in agent.seen), agent.seen
        plain = _Look()
        service.run_episode(EpisodeSpec("plain-1", plain))
        assert not any("second layer" in o for o in plain.seen)
    finally:
        service.shutdown()
