"""The prefilter changes speed, never results; guards are necessary conditions."""

from __future__ import annotations

import pytest

from bastion.events import Event
from bastion.policy import Policy
from bastion.rules import load_ruleset
from bastion.rules.compile import guard, regex_literals
from bastion.rules.condition import parse_condition
from bastion.rules.fields import known_fields
from bastion.rules.testing import command_event, event_for_case

FIELDS = known_fields()
RULESET = load_ruleset(Policy.default())
PLAIN = load_ruleset(Policy.default(), use_automaton=False)

EXTRA_COMMANDS = [
    "ls -la", "git status", "pip install -r requirements.txt", "python -m pytest -q",
    "find . -name '*.py' -exec grep -l TODO {} \\;", "cat /etc/os-release", "make -j4",
    "curl -fsSL https://example.com/x.tgz -o x.tgz", "docker ps", "kubectl get pods -A",
    "ssh -R 80:localhost:80 x@h", "sudo vim -c ':!/bin/sh'", "nmap -sS 10.0.0.0/24",
    "echo c3NoIC1SIDgwOmxvY2FsaG9zdDo4MCB4QGg= | base64 -d | sh", "crontab -l",
]


def all_events() -> list[Event]:
    events = [command_event(c) for c in EXTRA_COMMANDS]
    for rule in RULESET.rules:
        for key in ("match", "no_match"):
            events.extend(event_for_case(case) for case in rule.tests.get(key, []))
    return events


def brute_force(event: Event) -> list[str]:
    kind = event.kind.value
    return [r.id for r in RULESET.rules if r.enabled and kind in r.kinds and r.predicate(event)]


def test_indexed_match_equals_rule_by_rule_evaluation() -> None:
    events = all_events()
    assert len(events) > 300
    for ev in events:
        expected = brute_force(ev)
        assert RULESET.matching_rule_ids(ev) == expected
        assert PLAIN.matching_rule_ids(ev) == expected
        assert [m.rule_id for m in RULESET.match(ev)] == expected


def test_every_command_and_exec_rule_has_a_guard() -> None:
    unguarded = [r.id for r in RULESET.rules if r.guard is None and r.kinds & {"command", "exec"}]
    assert unguarded == []


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"stratum\+tcp://", {"stratum+tcp://"}),
        (r"(?i)ip_forward\s*=\s*1|net\.ipv4", {"ip_forward", "net.ipv4"}),
        (r"^crontab(?![^|;&]*\s-l)", {"crontab"}),
        (r"(?:curl|wget)\s+-o", {"curl", "wget"}),
        (r"\bsh\b", None),  # too short to be selective
        (r"a.*b", None),
        (r"(?:foo)+bar", {"bar"}),
    ],
)
def test_regex_literals(pattern: str, expected: set[str] | None) -> None:
    got = regex_literals(pattern)
    assert (set(got) if got is not None else None) == expected


@pytest.mark.parametrize(
    "condition",
    [
        "proc.name = nc and proc.args in (-e, -c)",
        "proc.name = nc or proc.exe contains '/dev/tcp/'",
        "(proc.name = nc or proc.name = ncat) and (proc.args = -e or proc.exe contains exec)",
        "proc.name = a and not proc.name = b",
        "not proc.name = a",
        "proc.uid > 3",
    ],
)
def test_guard_is_a_necessary_condition(condition: str) -> None:
    node = parse_condition(condition, is_field=FIELDS.__contains__)
    g = guard(node)
    if condition.startswith(("not", "proc.uid")):
        assert g is None
        return
    assert g is not None
    # Every alternative's clauses name atoms that appear in the condition.
    atoms = {a for alt in g for clause in alt for a in clause}
    assert all(a[1] in condition for a in atoms)
