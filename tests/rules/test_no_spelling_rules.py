"""No rule matches a raw substring of a command line: the loader refuses it, and every
built-in rule (conditions, macros, exceptions) passes that check."""

from __future__ import annotations

import pytest

from bastion.errors import PolicyError
from bastion.policy import Policy
from bastion.rules import PackSource, compile_sources, load_ruleset
from bastion.rules.loader import RAW_TEXT_FIELDS, raw_text_violation
from bastion.rules.testing import TEST_GRADER_POLICY

RULESET = load_ruleset(Policy.from_dict(TEST_GRADER_POLICY))


@pytest.mark.parametrize("rule_id", [r.id for r in RULESET.rules])
def test_builtin_rule_reads_parsed_fields_only(rule_id: str) -> None:
    rule = RULESET.rule(rule_id)
    assert raw_text_violation(rule.node) is None, rule.condition
    for node in rule.exception_nodes:
        assert raw_text_violation(node) is None


def _pack(condition: str) -> PackSource:
    return PackSource("t", "t.yaml", f"""- requires_engine: 1
- rule: t.r
  desc: a test rule that should not load
  condition: {condition}
  severity: high
""")


@pytest.mark.parametrize("condition", [
    *(f"{f} contains x" for f in sorted(RAW_TEXT_FIELDS)),
    "cmd.raw icontains '/environ'",
    "cmd.text regex 'open\\s*\\('",
    "proc.cmdline regex '/etc/shadow'",
    "cmd.interp_code contains 'import ssl'",
    "cmd.argv contains 'ssh -R'",
    "cmd.argv regex '\\s-R\\s'",
    "cmd.names = ssh and not cmd.raw endswith x",
])
def test_loader_refuses_raw_text_matching(condition: str) -> None:
    with pytest.raises(PolicyError) as err:
        compile_sources([_pack(condition)])
    assert "t.yaml:4:" in str(err.value)  # file:line:column of the condition


@pytest.mark.parametrize("condition", [
    "cmd.args = 'ssh -R'",
    "cmd.argv regex '^ssh\\s'",
    "cmd.argv startswith 'crontab '",
    "cmd.paths glob '*/.bashrc'",
    "proc.args regex '^-R$'",
    "cmd.raw = 'ls'",
])
def test_loader_accepts_parsed_fields(condition: str) -> None:
    compile_sources([_pack(condition)])


def test_policy_override_exception_is_checked_too() -> None:
    policy = Policy.from_dict({"rules": {"overrides": [
        {"rule": "tunnels.ssh_port_forward", "exceptions": ["cmd.raw contains lab"]}]}})
    with pytest.raises(PolicyError):
        load_ruleset(policy)
