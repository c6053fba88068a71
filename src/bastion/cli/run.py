"""`bastion run` and `bastion shell`: one command, or an interactive shell, in a session."""

from __future__ import annotations

import json
import os
import sys

import typer
from rich.console import Console

from ..calls import check_call
from ..results import ExecResult
from .common import PolicyOption, StateDirOption, fail, load_policy, user_errors

__all__ = ["register"]

ImageOption = typer.Option(
    None, "--image",
    help="run inside this container image (OCI layout DIR[:TAG], `docker save` archive, ...)")


def register(app: typer.Typer) -> None:
    app.command(
        "run",
        context_settings={"allow_interspersed_args": False},
        help="Run one command in a fresh session and print its result.",
    )(run)
    app.command("shell", help="An interactive shell inside a fresh session.")(shell)


def run(
    command: list[str] = typer.Argument(..., help="the command and its arguments (after --)"),
    policy: str | None = PolicyOption,
    as_json: bool = typer.Option(
        False, "--json", help="print one JSON object (schema documented in README, versioned)"
    ),
    timeout: float | None = typer.Option(None, help="per-call timeout in seconds"),
    lab: bool = typer.Option(False, "--lab", help="route allowed traffic into the simulated lab"),
    image: str | None = ImageOption,
    state_dir: str | None = StateDirOption,
) -> None:
    try:  # before a session exists: a bad --timeout is the caller's mistake, said at once
        cmd = check_call(command[0] if len(command) == 1 else command, step=0, call_id="c0",
                         timeout=timeout)
    except (TypeError, ValueError) as exc:
        raise fail(str(exc).replace("timeout must", "--timeout must")) from None
    stdin = None if sys.stdin.isatty() else sys.stdin.buffer.read()
    with user_errors():
        payload, result = _run_one(cmd, policy=policy, timeout=timeout, lab=lab, image=image,
                                   state_dir=state_dir, stdin=stdin)
    if as_json:
        print(json.dumps(payload))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.verdicts or result.outcome.value not in ("ok", "exit_nonzero"):
            from ..audit.report import terminal_safe  # (the audit package is slow to import)
        if result.outcome.value not in ("ok", "exit_nonzero"):
            Console(stderr=True).print(f"[bold red]bastion:[/] {result.outcome.value}: "
                                       f"{terminal_safe(result.reason or '')}")
        for v in result.verdicts:
            Console(stderr=True).print(
                f"[yellow]verdict[/] {v.severity} {terminal_safe(v.rule_id)}: "
                f"{terminal_safe(v.message)} -> {v.action.value}")
    raise typer.Exit(result.exit_code if result.exit_code < 256 else 1)


def _run_one(cmd: str | list[str], *, policy: str | None, timeout: float | None, lab: bool,
             image: str | None, state_dir: str | None,
             stdin: bytes | None) -> tuple[dict[str, object], ExecResult]:
    """One call in a fresh session: in the node daemon of the state directory when one
    answers (no sandbox, sensor or rule start-up in this process), else here."""
    from ..daemon import NodeClient

    client = None if os.environ.get("BASTION_NO_NODE") else NodeClient.running(state_dir)
    if client is not None:
        with client.session(policy, lab=lab, image=image) as remote:
            result = remote.exec(cmd, step=0, call_id="c0", timeout=timeout, stdin=stdin)
            return ({**result.to_dict(), "session_id": remote.session_id,
                     "policy": remote.policy_name, "policy_hash": remote.policy_hash,
                     "node": True}, result)
    from ..session import Session

    pol = load_policy(policy)
    with Session(pol, state_dir=state_dir, lab=lab, image=image) as session:
        result = session.exec(cmd, step=0, call_id="c0", timeout=timeout, stdin=stdin)
        return ({**result.to_dict(), "session_id": session.session_id,
                 "policy": pol.name, "policy_hash": pol.hash}, result)


def shell(
    policy: str | None = PolicyOption,
    lab: bool = typer.Option(False, "--lab", help="route allowed traffic into the simulated lab"),
    image: str | None = ImageOption,
    state_dir: str | None = StateDirOption,
) -> None:
    """Each line is one tool call (step), so verdicts are shown as they happen."""
    from ..audit.report import terminal_safe
    from ..session import Session

    console = Console()
    with user_errors():
        pol = load_policy(policy)
        with Session(pol, state_dir=state_dir, lab=lab, image=image) as session:
            console.print(f"[bold]bastion shell[/] session {session.session_id} "
                          f"(policy {pol.name}); each line is one tool call; Ctrl-D to end")
            step = 0
            while True:
                try:
                    line = input(f"[{step}] sandbox$ ")
                except EOFError:
                    break
                if not line.strip():
                    continue
                result = session.exec(line, step=step)
                sys.stdout.write(result.stdout)
                sys.stderr.write(result.stderr)
                for v in result.verdicts:
                    console.print(f"[yellow]verdict[/] {v.severity} {terminal_safe(v.rule_id)}: "
                                  f"{terminal_safe(v.message)} -> {v.action.value}")
                if result.outcome.value not in ("ok", "exit_nonzero"):
                    console.print(f"[red]{result.outcome.value}[/]: "
                                  f"{terminal_safe(result.reason)}")
                step += 1
                if session.ended:
                    console.print(f"[red]{terminal_safe(session.ended)}[/]")
                    break
    os.environ.pop("BASTION_SHELL", None)
