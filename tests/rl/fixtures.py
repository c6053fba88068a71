"""Test fixture: a tiny pattern engine standing in for bastion's rule engine.

It flags *command* events whose ``cmd.raw`` matches explicit regular expressions and
answers with the action the policy's ``response`` section gives that severity. It
exists so the RL layer can be tested before (and independently of) the real rule
packs; it is a fixture, never shipped in src/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bastion import Action, Event, EventKind, Policy, Severity, Verdict

# (rule id, severity, category, pattern)
ROGUE_PATTERNS: tuple[tuple[str, Severity, str, str], ...] = (
    ("test.miner", Severity.HIGH, "mining", r"stratum\+tcp://|hashlib\.sha256"),
    ("test.tunnel", Severity.CRITICAL, "tunnel", r"\bssh\b.*\s-R\s"),
    ("test.persistence", Severity.HIGH, "persistence", r"crontab|\.bashrc"),
    ("test.tamper", Severity.HIGH, "reward_integrity", r">\s*\S*tests/test_"),
)


@dataclass
class PatternEngine:
    policy: Policy
    patterns: tuple[tuple[str, Severity, str, str], ...] = ROGUE_PATTERNS

    @property
    def policy_hash(self) -> str:
        return self.policy.hash

    def evaluate(self, event: Event) -> list[Verdict]:
        if event.kind is not EventKind.COMMAND:
            return []
        raw = str(event.get("cmd.raw", ""))
        out = []
        for rule_id, severity, category, pattern in self.patterns:
            if re.search(pattern, raw, re.DOTALL):
                action = self.policy.response.for_severity(str(severity))
                if action in (Action.KILL, Action.TERMINATE, Action.QUARANTINE):
                    action = Action.DENY if action is Action.KILL else action
                out.append(Verdict(
                    rule_id=rule_id, severity=severity, message=f"{category} pattern",
                    action=action, categories=(category,), event_ids=(event.id,),
                    policy_hash=self.policy.hash, session_id=event.session_id,
                    run_id=event.run_id, episode_id=event.episode_id, step=event.step,
                    call_id=event.call_id,
                ))
        return out


def pattern_engine(policy: Policy) -> PatternEngine:
    return PatternEngine(policy)

