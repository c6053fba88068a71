"""A bad policy file gets an error that names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import Policy, PolicyError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return p


def test_default_policy_is_valid_and_hashed() -> None:
    p = Policy.default()
    assert p.hash.startswith("sha256:") and len(p.hash) == 71
    assert p.sandbox.limits.pids > 0 and p.network.default == "deny"


def test_design_example_loads(tmp_path: Path) -> None:
    text = """
name: swe-rl-default
sandbox:
  rootfs: /
  workspace: ./workspace
  protected: [/grader, ./tests]
  hidden: [/root, /home, /etc/bastion]
  limits: {memory: 4GiB, pids: 256, cpus: 2, exec_timeout: 600s, session_timeout: 3600s}
network:
  default: deny
  phases:
    setup: {allow: [{domain: pypi.org}, {domain: "*.pythonhosted.org"}]}
    agent: {allow: []}
  dns: allowlist
rules:
  packs: [mining, tunnels, shells, persistence, credentials, reward_integrity, monitor_tamper]
  overrides: []
response:
  critical: terminate
  high: kill
  medium: alert
rl:
  penalty: {critical: -1.0, high: -0.5, medium: -0.1}
  on_violation: mask
"""
    p = Policy.load(write(tmp_path, text))
    assert p.name == "swe-rl-default"
    assert p.sandbox.limits.memory == 4 * 1024**3
    assert p.sandbox.limits.exec_timeout == 600.0
    assert p.network.phases["setup"].allow[1].domain == "*.pythonhosted.org"


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("name: x\nsandbox:\n  limits:\n    memroy: 1GiB\n", 4, "sandbox.limits.memroy",
         "unknown key"),
        ("name: x\nsandbox:\n  limits:\n    memory: lots\n", 4, "sandbox.limits.memory",
         "not a size"),
        ("name: x\nresponse:\n  high: explode\n", 3, "response.high", "Input should be"),
        ("name: x\nnetwork:\n  phases:\n    agent:\n      allow:\n        - {port: 80}\n", 6,
         "network.phases.agent.allow.0", "exactly one of"),
        ("name: x\nsandboxx: {}\n", 2, "sandboxx", "unknown key"),
        ("name: x\nname: y\n", 2, "name", "duplicate key"),
        ("name: x\nsandbox: [\n", 3, None, "not valid YAML"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int,
                                       key: str | None, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    err = info.value
    assert err.file == str(path) and err.line == line and err.key == key
    assert fragment in str(err) and str(path) in str(err)


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        Policy.load(tmp_path / "nope.yaml")


def test_hash_ignores_formatting_but_not_meaning() -> None:
    a = Policy.from_yaml("name: x\nsandbox: {limits: {pids: 10}}\n")
    b = Policy.from_yaml("# comment\nsandbox:\n  limits:\n    pids: 10\nname: x\n")
    c = Policy.from_yaml("name: x\nsandbox: {limits: {pids: 11}}\n")
    assert a.hash == b.hash != c.hash
