"""Pack compatibility check: removals, disabling, lowered severity, dropped tags break."""

from __future__ import annotations

from pathlib import Path

from bastion.rules.compat import compare, main
from bastion.rules.loader import PackSource, builtin_pack_names, builtin_pack_source

OLD = """- requires_engine: 1
- list: tools
  items: [a]
- macro: is_tool
  condition: proc.name in (tools)
- rule: p.kept
  desc: kept rule
  condition: is_tool
  severity: high
  tags: [T1059, T1105]
- rule: p.removed
  desc: removed rule
  condition: proc.name = x
  severity: low
  tags: [T1059]
"""
NEW = """- requires_engine: 2
- list: tools
  items: [a, b]
- rule: p.kept
  desc: kept rule, condition edited
  condition: proc.name in (tools)
  severity: medium
  enabled: false
  tags: [T1059]
- rule: p.added
  desc: new
  condition: proc.name = y
  severity: low
  tags: [T1059]
"""


def test_breaking_changes_are_flagged() -> None:
    changes = {(c.kind, c.item): c.breaking for c in compare(
        [PackSource("p", "old/p.yaml", OLD)], [PackSource("p", "new/p.yaml", NEW)])}
    assert changes == {
        ("rule_removed", "p.removed"): True,
        ("rule_disabled", "p.kept"): True,
        ("severity_lowered", "p.kept"): True,
        ("tags_dropped", "p.kept"): True,
        ("condition_changed", "p.kept"): False,
        ("rule_added", "p.added"): False,
        ("macro_removed", "is_tool"): True,
        ("engine_raised", "p"): True,
    }


def test_builtin_packs_against_themselves_have_no_changes(tmp_path: Path, capsys) -> None:
    for name in builtin_pack_names():
        (tmp_path / f"{name}.yaml").write_text(builtin_pack_source(name).text)
    assert main([str(tmp_path)]) == 0
    assert "0 change(s), 0 breaking" in capsys.readouterr().out
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "p.yaml").write_text(OLD)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "p.yaml").write_text(NEW)
    assert main([str(tmp_path / "extra"), str(tmp_path / "new")]) == 1
