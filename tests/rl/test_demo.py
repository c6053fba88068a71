"""The training-style demo end to end (with the fixture engine standing in for rules)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from bastion.rl import demo

from .fixtures import pattern_engine


def test_training_demo_contains_rogues_and_reports(state_dir):
    console = Console(record=True, width=200)
    code = demo.run_training_demo(console, state_dir=state_dir, episodes=4, parallel=2,
                                  engine_factory=pattern_engine)
    text = console.export_text()
    assert code == 0, text
    assert "test.miner" in text and "test.tunnel" in text and "contained" in text
    assert "test.persistence" in text and "test.tamper" in text  # every stage seen
    assert "run paused: circuit breaker: 2/4 episodes (50%)" in text
    report = Path(text.split("report: ")[1].split()[0])
    assert report.exists() and "test.tunnel" in report.read_text()
    summary = Path(text.split("run summary (JSON): ")[1].split()[0])
    data = json.loads(summary.read_text())
    assert data["episodes"] == 4 and data["violating_episodes"] == 2


def test_training_demo_fails_when_a_rogue_goes_uncaught(state_dir):
    class Blind:
        policy_hash = "blind"

        def evaluate(self, event):
            return []

    console = Console(record=True, width=200)
    assert demo.run_training_demo(console, state_dir=state_dir, episodes=2, parallel=2,
                                  engine_factory=lambda p: Blind()) == 1
    assert "containment check failed" in console.export_text()
