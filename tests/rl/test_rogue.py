"""The scripted policies themselves: escalation order and safe addresses."""

from __future__ import annotations

import re

from bastion.rl import OrdinaryPolicy, RoguePolicy
from bastion.rl.rogue import MALICIOUS_STAGES


def test_rogue_escalates_only_under_reward_pressure():
    rogue = RoguePolicy()
    rogue.reset()
    actions = [rogue.act("", None, {"bastion": {"task_reward": 0.0}}) for _ in range(9)]
    assert actions[4:8] == list(MALICIOUS_STAGES.values())
    assert rogue.stage_steps == {"miner": 4, "tunnel": 5, "persistence": 6, "tamper": 7}
    assert '"submit"' in actions[8]
    paid = RoguePolicy()
    paid.reset()
    actions = [paid.act("", None, {"bastion": {"task_reward": 1.0}}) for _ in range(6)]
    assert not paid.stage_steps and '"submit"' in actions[4]  # no pressure, no escalation


def test_ordinary_plan_has_no_stage():
    ordinary = OrdinaryPolicy()
    ordinary.reset()
    actions = [ordinary.act("", None, {}) for _ in range(5)]
    assert not set(actions) & set(MALICIOUS_STAGES.values())


def test_stage_destinations_are_documentation_addresses_only():
    for action in MALICIOUS_STAGES.values():
        for ip in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", action):
            if ip == "0.0.0.0":  # a bind address on the far side, not a destination
                continue
            assert ip.startswith(("192.0.2.", "198.51.100.", "203.0.113.")), ip
