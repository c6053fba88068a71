"""`bastion redteam`: run the red-team scorecard (benign workloads and attacks) against
the lab and report precision and containment."""

# ruff: noqa: B008 - typer options are declared in the signature, as typer documents
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..redteam import RunConfig, Runner, ScenarioError, load_builtin, load_paths, select
from ..redteam.report import render_terminal, write_html, write_json
from ..redteam.runner import ScenarioResult, base_policy
from ..state import StateDir
from .common import StateDirOption, fail, user_errors

__all__ = ["register"]

_HELP = """Run the red-team scorecard: honest agent workloads and attacks, each in a real
session against the lab (`bastion lab`), and report what bastion did.

Benign workloads (venv + pip from a package index on the lab, pytest, gcc/make/cmake,
git, dev servers, sqlite, background jobs...) must get no containing action and no RL
penalty. Attacks over the twelve rule-pack categories (mining, tunnels, shells, exfil,
download_exec, credentials, persistence, privesc, recon, reward_integrity,
monitor_tamper, defense_evasion), plain and evasive, must be contained with zero bytes
reaching a forbidden lab host, detected with the right category and charged to the
right tool call.

Examples:

  bastion redteam --suite fast                      # the quick subset (make test runs it)

  bastion redteam --filter mining --filter evasive  # evasive mining scenarios only

  bastion redteam --concurrency 64 --json card.json --html card.html

Exit status: 0 when every scenario is as expected, 1 otherwise, 2 on a usage error.
"""


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    app.command("redteam", help=_HELP)(redteam)


def redteam(
    suite: str = typer.Option("full", "--suite", help="fast (a few minutes) or full"),
    concurrency: int = typer.Option(
        1, "--concurrency", "-c", min=1,
        help="episodes run at once; with N > 1 benign workloads are repeated until N honest "
             "episodes run beside the attacks (an RL rollout's shape)"),
    json_out: Path | None = typer.Option(None, "--json", help="write the scorecard as JSON"),
    html_out: Path | None = typer.Option(None, "--html", help="write the scorecard as HTML"),
    filters: list[str] = typer.Option(
        [], "--filter", "-k",
        help="keep scenarios whose id (glob or substring), kind (benign/attack), category "
             "or variant (plain/evasive) matches; a,b matches either; repeat to narrow"),
    scenarios: list[Path] = typer.Option(
        [], "--scenarios", help="scenario YAML files or directories (default: the built-in set)"),
    policy: Path | None = typer.Option(
        None, "--policy", "-p",
        help="base policy YAML (default: bastion's defaults with the lab's allowed host)"),
    list_only: bool = typer.Option(False, "--list", help="list the selected scenarios and exit"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show every benign workload"),
    lab_name: str | None = typer.Option(
        None, "--lab", help="use this lab (default: a private one, brought up and down)"),
    state_dir: str | None = StateDirOption,
) -> None:
    if suite not in ("fast", "full"):
        raise fail(f"--suite must be fast or full (got {suite!r})")
    try:
        found = load_paths(scenarios) if scenarios else load_builtin()
    except (ScenarioError, OSError) as exc:
        raise fail(str(exc)) from None
    chosen = select(found, suite=suite, patterns=filters)
    if not chosen:
        raise fail("no scenario matches (try --list without --filter)")
    if list_only:
        for sc in chosen:
            print(f"{sc.id:60} {sc.kind:7} {sc.category:16} {sc.variant:8} {sc.where}")
        return
    base = base_policy()
    if policy is not None:
        try:
            base = yaml.safe_load(policy.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise fail(f"{policy}: {exc}") from None
    console = Console(stderr=True)
    # a TERM (CI timeout, kill) unwinds like ^C: sessions close and the lab goes down
    signal.signal(signal.SIGTERM, _terminate)
    with user_errors():
        root = StateDir.resolve(state_dir)
        root.ensure()
        config = RunConfig(state_dir=root.root, concurrency=concurrency,
                           honest_episodes=concurrency if concurrency > 1 else 0,
                           lab_name=lab_name, policy=base,
                           run_id=f"redteam-{time.strftime('%Y%m%dT%H%M%S')}")
        runner = Runner(config)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as bar:
            task = bar.add_task(f"redteam {suite}", total=None)

            def progress(what: str, result: ScenarioResult | None, done: int,
                         total: int) -> None:
                bar.update(task, total=total, completed=done)
                if result is not None:
                    mark = {"pass": "[green]ok[/]", "fail": "[red]FAIL[/]",
                            "error": "[yellow]ERR[/]"}[result.status]
                    bar.console.print(f"{mark:>4} {result.episode} ({result.duration:.1f}s)"
                                      + (f" - {result.problems[0]}" if result.problems else "")
                                      + (f" - {result.error}" if result.error else ""))

            card = runner.run(chosen, suite=suite, progress=progress)
    render_terminal(card, None, verbose=verbose)
    if json_out:
        write_json(card, json_out)
    if html_out:
        write_html(card, html_out)
    sys.stdout.flush()
    if any(not r.passed for r in card.results):
        raise typer.Exit(1)
