"""Export, incidents and the episode report (terminal) read back what was written."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from bastion import Severity
from bastion.audit.reader import export_jsonl, incidents
from bastion.audit.report import build_report, render_terminal
from bastion.cli import app

from .helpers import RUN, build_log


def test_export_jsonl_one_record_per_line(audit_state: Path) -> None:
    acked = build_log(audit_state)
    out = io.StringIO()
    assert export_jsonl(audit_state, out) == len(acked)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["seq"] for r in lines] == acked
    assert {r["type"] for r in lines} == {"policy", "lifecycle", "event", "verdict", "action"}
    assert all(r["run_id"] == RUN and len(r["head"]) == 64 for r in lines)
    cli = CliRunner().invoke(app, ["audit", "export", "--format", "jsonl", "--state-dir",
                                   str(audit_state)])
    assert cli.exit_code == 0
    assert [json.loads(x)["seq"] for x in cli.stdout.splitlines()] == acked
    bad = CliRunner().invoke(app, ["audit", "export", "--format", "csv", "--state-dir",
                                   str(audit_state)])
    assert bad.exit_code == 2


def test_incidents_with_attribution(audit_state: Path) -> None:
    build_log(audit_state)
    all_ = incidents(audit_state)
    assert len(all_) == 4
    critical = incidents(audit_state, min_severity=Severity.CRITICAL)
    assert [(i.verdict.episode_id, i.verdict.step, i.verdict.call_id, i.verdict.rule_id)
            for i in critical] == [("ep-0", 2, "c2", "mining.stratum"),
                                   ("ep-1", 2, "c2", "mining.stratum")]
    assert incidents(audit_state, run="nope") == []
    cli = CliRunner().invoke(app, ["incidents", "--run", RUN, "--min-severity", "high",
                                   "--json", "--state-dir", str(audit_state)])
    assert cli.exit_code == 0, cli.output
    rows = [json.loads(x) for x in cli.stdout.splitlines()]
    assert {(r["run_id"], r["rule_id"], r["severity"], r["action"]) for r in rows} == {
        (RUN, "mining.stratum", "critical", "kill"), (RUN, "tunnels.ssh_reverse", "high", "kill")}
    assert all(r["step"] is not None and r["call_id"] and r["episode_id"] for r in rows)


def test_report_builds_timeline_and_process_tree(audit_state: Path) -> None:
    build_log(audit_state)
    report = build_report(audit_state, "ep-1")
    assert [c.call_id for c in report.calls] == ["c0", "c1", "c2", "c3"]
    miner = report.calls[2]
    assert miner.command.startswith("nohup ./xmrig")
    assert miner.outcome == "killed"
    (shell,) = miner.processes
    assert shell.name == "bash" and [c.name for c in shell.children] == ["xmrig"]
    assert [c.pid for c in shell.children[0].children] == [1022]
    assert shell.children[0].exit_code == 0
    assert [v.rule_id for v in miner.verdicts] == ["mining.stratum"]
    assert len(miner.actions) == 1 and len(miner.connections) == 2
    assert report.calls[0].verdicts == []
    console = Console(record=True, width=200)
    render_terminal(report, console)
    text = console.export_text()
    assert "step 2 [c2] $ nohup ./xmrig -o pool:3333 &" in text
    assert "verdict critical mining.stratum" in text and "action kill pid 1021" in text
    cli = CliRunner().invoke(app, ["report", "ep-0", "--state-dir", str(audit_state)])
    assert cli.exit_code == 0 and "ssh -R 9000" in cli.stdout
    missing = CliRunner().invoke(app, ["report", "nope", "--state-dir", str(audit_state)])
    assert missing.exit_code == 1 and "no records for episode" in missing.output


def test_terminal_report_cannot_be_forged_by_what_the_trail_holds(audit_state: Path) -> None:
    """A writer that slipped a newline or markup into a call id, a command or a path
    (Session refuses such call ids; an older trail or another writer might not) cannot
    make the report print a line of its own."""
    from bastion.audit import AuditTrail
    from bastion.events import Event, EventKind

    forged = "c1\nstep 9 [c9] $ rm -rf / -> ok"
    with AuditTrail(audit_state, "forge") as trail:
        for state, fields in (("call_start", {"cmd.raw": "echo hi\n[bold]verdict none"}),
                              ("call_end", {"outcome": "ok", "proc.exit_code": 0})):
            trail.append_event(Event(kind=EventKind.LIFECYCLE, session_id="s", run_id="forge",
                                     episode_id="ep-f", step=1, call_id=forged,
                                     fields={"life.state": state, **fields}))
    console = Console(record=True, width=300)
    render_terminal(build_report(audit_state, "ep-f"), console)
    lines = console.export_text().splitlines()
    assert not any(line.startswith("step 9") for line in lines), lines
    assert any("c1\\x0astep 9 [c9]" in line for line in lines), lines
    assert not any(line.startswith("[bold]verdict") or line.startswith("verdict none")
                   for line in lines)
