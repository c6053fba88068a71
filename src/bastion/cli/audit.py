"""`bastion audit verify|export`, `bastion incidents`, `bastion report`, `bastion replay`:
reading, checking and re-running what the audit trail recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..audit.html import render_html
from ..audit.reader import export_jsonl, incidents
from ..audit.replay import replay_episode
from ..audit.report import build_report, render_terminal
from ..audit.verify import verify_state_dir
from ..events import Severity
from .common import PolicyOption, StateDirOption, fail, load_policy, user_errors

__all__ = ["register"]

_OUTPUT = typer.Option(None, "--output", "-o", help="file (default stdout)")
_HTML = typer.Option(None, "--html", help="also write a self-contained HTML page here")


def register(app: typer.Typer) -> None:
    audit = typer.Typer(help="Verify and export the tamper-evident audit trail.",
                        no_args_is_help=True)
    audit.command("verify", help="Check hash chains and signed checkpoints; name the "
                                 "first bad record and the kind of tampering.")(verify)
    audit.command("export", help="Export every record, one JSON object per line.")(export)
    app.add_typer(audit, name="audit")
    app.command("incidents", help="List recorded verdicts with their attribution.")(
        list_incidents)
    app.command("report", help="An episode's timeline: commands, processes, connections, "
                               "verdicts, actions.")(report)
    app.command("replay", help="Re-run an episode's tool calls in a fresh session and "
                               "show where the verdicts differ.")(replay)


def verify(
    checkpoint: str | None = typer.Option(
        None, "--checkpoint", help="exported checkpoint note file, run directory or sink "
        "directory (default: <state-dir>/checkpoints)"),
    run: str | None = typer.Option(None, "--run", help="only this run"),
    public_key: str | None = typer.Option(
        None, "--public-key", help="pin the run's Ed25519 public key (base64)"),
    workers: int | None = typer.Option(None, help="parallel chain-scan processes"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per run"),
    require_anchor: bool = typer.Option(
        False, "--require-anchor", help="fail when records lie after the latest exported "
        "checkpoint (protected by the chain alone)"),
    state_dir: str | None = StateDirOption,
) -> None:
    with user_errors():
        try:
            results = verify_state_dir(state_dir, checkpoints=checkpoint, run=run,
                                       public_key=public_key, workers=workers,
                                       require_anchor=require_anchor)
        except ValueError as exc:
            raise fail(f"bad --public-key: {exc}") from None
    if not results:
        raise fail("no audit trail found" + (f" for run {run}" if run else ""), code=1)
    console = Console()
    for result in results:
        if as_json:
            problem = result.problem
            print(json.dumps({
                "run_id": result.run_id, "ok": result.ok, "records": result.records,
                "checkpoints": result.checkpoints, "exported": result.exported,
                "latest_exported": result.latest_exported, "key_source": result.key_source,
                "kind": problem.kind if problem else None,
                "seq": problem.seq if problem else None,
                "detail": problem.detail if problem else None,
                "notes": list(result.notes), "seconds": round(result.seconds, 6)}))
            continue
        console.print(result.summary(), style="green" if result.ok else "bold red",
                      highlight=False, soft_wrap=True)
        for note in result.notes:
            console.print(f"     note: {note}", style="yellow", highlight=False)
    raise typer.Exit(0 if all(r.ok for r in results) else 1)


def export(
    fmt: str = typer.Option("jsonl", "--format", help="output format (jsonl)"),
    run: str | None = typer.Option(None, "--run", help="only this run"),
    output: Path | None = _OUTPUT,
    state_dir: str | None = StateDirOption,
) -> None:
    if fmt != "jsonl":
        raise fail(f"unknown format {fmt!r}; supported: jsonl")
    with user_errors():
        if output is None:
            export_jsonl(state_dir, sys.stdout, run=run)
        else:
            with open(output, "w", encoding="utf-8") as out:
                count = export_jsonl(state_dir, out, run=run)
            print(f"exported {count} records to {output}", file=sys.stderr)


def list_incidents(
    run: str | None = typer.Option(None, "--run", help="only this run"),
    min_severity: str = typer.Option("info", "--min-severity",
                                     help="info, low, medium, high or critical"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per verdict"),
    state_dir: str | None = StateDirOption,
) -> None:
    try:
        floor = Severity.parse(min_severity)
    except ValueError as exc:
        raise fail(str(exc)) from None
    with user_errors():
        found = incidents(state_dir, run=run, min_severity=floor)
    if as_json:
        for incident in found:
            print(json.dumps({"run_id": incident.run_id, "seq": incident.seq,
                              **incident.verdict.to_dict()}))
        return
    table = Table("run", "episode", "step", "call", "rule", "severity", "action", "message",
                  "seq", title=f"{len(found)} incident(s)")
    for incident in found:
        v = incident.verdict
        table.add_row(incident.run_id, v.episode_id, "" if v.step is None else str(v.step),
                      v.call_id or "", v.rule_id, str(v.severity), v.action.value, v.message,
                      str(incident.seq))
    Console().print(table)


def report(
    episode: str = typer.Argument(..., help="episode id"),
    html: Path | None = _HTML,
    state_dir: str | None = StateDirOption,
) -> None:
    with user_errors():
        model = build_report(state_dir, episode)
    render_terminal(model, Console())
    if html is not None:
        try:
            html.write_text(render_html(model), encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write {html}: {exc}") from None
        Console(stderr=True).print(f"wrote {html}")


def replay(
    episode: str = typer.Argument(..., help="episode id"),
    policy: str | None = PolicyOption,
    state_dir: str | None = StateDirOption,
) -> None:
    with user_errors():
        new_policy = load_policy(policy) if policy else None
        result = replay_episode(state_dir, episode, policy=new_policy)
    console = Console()
    console.print(f"replayed episode {result.episode_id} in session {result.session_id} "
                  f"(recorded policy {result.recorded_policy}, replay policy "
                  f"{result.replay_policy})", highlight=False)
    table = Table("step", "call", "command", "recorded", "replayed", "outcome", "")
    for call in result.calls:
        table.add_row(
            "" if call.step is None else str(call.step), call.call_id, call.command[:60],
            ", ".join(f"{r}->{a}" for r, a in call.recorded) or "-",
            ", ".join(f"{r}->{a}" for r, a in call.replayed) or "-",
            f"{call.recorded_outcome} / {call.replayed_outcome}",
            "[bold red]DIFFERS[/]" if call.differs else "same")
    console.print(table)
    console.print(f"{len(result.differences)} of {len(result.calls)} call(s) differ")
