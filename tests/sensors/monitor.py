"""Helpers shared by the sensor, engine and responder tests: a host with real sensors
and sessions wired to a real Engine (small rule packs compiled by bastion.rules) and a
real Responder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bastion import Policy, Session
from bastion.engine import Engine, default_detectors
from bastion.events import Event, EventKind, Verdict
from bastion.host import Host
from bastion.respond import Responder
from bastion.rules import PackSource, compile_sources
from bastion.sensors import uninstall_sensors
from tests.conftest import alive, wait_for  # noqa: F401 - one definition, shared by every test

TEST_RULES = """
- requires_engine: 1
- rule: test.forbidden_exec
  desc: a binary named like a miner was started (test rule)
  condition: proc.name in (xmrig-test, minerd-test)
  output: "forbidden binary %proc.name"
  severity: high
  kinds: [exec]
- rule: test.forbidden_command
  desc: a command mentions the forbidden word (test rule)
  condition: cmd.args contains forbidden-word
  output: "forbidden command"
  severity: high
  kinds: [command]
- rule: test.crontab_written
  desc: a crontab appeared in the workspace (test rule)
  condition: file.location = persistence and file.path endswith crontab
  output: "crontab written: %file.path"
  severity: medium
  kinds: [file.write, file.diff]
"""


def ruleset(policy: Policy, text: str = TEST_RULES):
    return compile_sources([PackSource("test", "test.yaml", text)], policy_hash=policy.hash)


def make_engine(policy: Policy, text: str = TEST_RULES) -> Engine:
    return Engine(ruleset(policy, text), policy.response,
                  default_detectors(policy.rules.detectors, cap_cores=policy.sandbox.limits.cpus,
                                    limits=policy.sandbox.limits))


def monitored_session(state_dir: Path, policy: Policy | dict | None = None, *,
                      rules: str = TEST_RULES, responder: Responder | None = None,
                      **kwargs: object) -> Session:
    if isinstance(policy, dict):
        policy = Policy.from_dict(policy)
    policy = policy or Policy.default()
    return Session(policy, state_dir=state_dir, engine=make_engine(policy, rules),
                   responder=responder or Responder(policy.response), **kwargs)  # type: ignore[arg-type]


def events_of(session: Session, kind: EventKind) -> list[Event]:
    return [e for e in list(session.events) if e.kind is kind]


def verdicts_named(session: Session, rule_id: str) -> list[Verdict]:
    return [v for v in list(session.verdicts) if v.rule_id == rule_id]


def bare_host(state_dir: Path) -> Host:
    """The host of ``state_dir`` without its default sensors, so that a test can put
    its own (differently configured) sensors on it without seeing every event twice."""
    host = Host.for_state_dir(state_dir)
    uninstall_sensors(host)
    return host


def names(events: Iterable[Event]) -> list[str]:
    return [str(e.fields.get("proc.name")) for e in events]
