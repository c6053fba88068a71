"""Run-level safety: rates per training step, circuit breaker, JSON summary."""

from __future__ import annotations

import json

import pytest

from bastion import Policy
from bastion.rl import (
    BastionEnv,
    BreakerTripped,
    OrdinaryPolicy,
    RoguePolicy,
    RunMonitor,
    run_episode,
)

from .fixtures import pattern_engine


def test_breaker_trips_on_real_episodes_and_summary_says_why(state_dir, tmp_path):
    policy = Policy.from_yaml("name: p\nrl:\n  breaker_rate: 0.3\n  breaker_min_episodes: 4\n")
    env = BastionEnv(policy, run_id="run-s", name="s", state_dir=state_dir,
                     engine_factory=pattern_engine, exec_timeout=20)
    monitor = RunMonitor(policy.rl, run_id="run-s")
    # training step 0: 4 ordinary episodes -> no violations, breaker stays closed
    for i in range(4):
        monitor.record(run_episode(env, OrdinaryPolicy(), episode_id=f"a{i}"), training_step=0)
    assert monitor.end_training_step(0).rate == 0.0
    monitor.check()
    # training step 1: 2 of 4 episodes are rogue -> rate 0.5 > 0.3 -> paused
    for i, agent in enumerate([OrdinaryPolicy(), RoguePolicy(), OrdinaryPolicy(), RoguePolicy()]):
        monitor.record(run_episode(env, agent, episode_id=f"b{i}"), training_step=1)
    stats = monitor.end_training_step(1)
    assert stats.episodes == 4 and stats.violating_episodes == 2 and stats.rate == 0.5
    assert stats.by_rule["test.miner"] == 2 and stats.by_rule["test.tunnel"] == 2
    assert stats.by_category["mining"] == 2 and stats.terminated == 2
    assert stats.flags == {"keep": 2, "mask": 2}
    with pytest.raises(BreakerTripped, match=r"2/4 episodes \(50%\).*training step 1"):
        monitor.check()
    summary = json.loads(monitor.write_summary(tmp_path / "run.json").read_text())
    assert summary["paused"].startswith("circuit breaker")
    assert summary["episodes"] == 8 and summary["violating_episodes"] == 2
    assert summary["training_steps"][1]["rate_by_rule"]["test.tunnel"] == 0.5
    assert summary["by_category"] == {"mining": 2, "tunnel": 2}


def test_breaker_ignores_small_steps():
    monitor = RunMonitor(Policy.default().rl, run_id="r")
    from bastion.rl.records import EpisodeRecord

    bad = EpisodeRecord("r", "e", "s", "h", violations=[
        {"rule_id": "x", "severity": "high", "categories": ["mining"]}])
    monitor.record(bad, training_step=0)
    assert monitor.end_training_step(0).rate == 1.0
    assert monitor.paused is None  # one episode is below breaker_min_episodes
