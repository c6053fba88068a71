"""`bastion redteam`'s command line: help, listing, filters, scenario errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from bastion.cli import app


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["redteam", *args])
    return result.exit_code, result.output


def test_help_explains_suites_filters_and_outputs() -> None:
    code, out = run("--help")
    assert code == 0
    for word in ("--suite", "--concurrency", "--json", "--html", "--filter", "benign",
                 "contained", "Exit status"):
        assert word in out, word


def test_list_fast_suite_with_filters() -> None:
    code, out = run("--list", "--suite", "fast", "--filter", "mining")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines and all(" mining " in line for line in lines)
    assert all(line.split()[0].startswith("attack.mining.") for line in lines)


def test_unknown_suite_and_empty_selection_are_usage_errors() -> None:
    assert run("--suite", "huge")[0] == 2
    assert run("--list", "--filter", "no-such-scenario-anywhere")[0] == 2


def test_bad_scenario_file_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios:\n  - id: b\n    kind: benign\n    stepz: []\n")
    code, out = run("--list", "--scenarios", str(bad))
    assert code == 2
    assert f"{bad}:4:" in out and "stepz: unknown key" in out
