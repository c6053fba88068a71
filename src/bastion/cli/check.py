"""`bastion check`: the static verdict for commands read on stdin (see
``bastion.checking`` for the input, the output schema and the decision).

When a node daemon serves the state directory, the commands are checked there, with
the policy's packs already compiled: the command itself then only starts Python and
sends its input."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from .common import PolicyOption, StateDirOption, load_policy, user_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("check", help="Static verdict for commands read on stdin (nothing runs).")(check)


def check(
    policy: str | None = PolicyOption,
    as_json: bool = typer.Option(
        False, "--json", help="one JSON object per input line (schema bastion.check/1)"),
    state_dir: str | None = StateDirOption,
) -> None:
    with user_errors():
        counts = _check_on_node(policy, as_json, state_dir)
        if counts is None:
            from ..checking import run_check

            counts = run_check(sys.stdin, sys.stdout, load_policy(policy), as_json=as_json)
    if not as_json:
        print(f"checked {sum(counts.values())}: {counts['deny']} deny, {counts['alert']} alert, "
              f"{counts['allow']} allow", file=sys.stderr)


def _check_on_node(policy: str | None, as_json: bool,
                   state_dir: str | None) -> dict[str, int] | None:
    """The counts, after printing the node's answer; None when no node answers."""
    if os.environ.get("BASTION_NO_NODE"):
        return None
    from ..daemon import NodeClient

    client = NodeClient.running(state_dir)
    if client is None:
        return None
    answer: dict[str, Any] = client.check(sys.stdin.read(), policy=policy, as_json=as_json)
    sys.stdout.write(answer["output"])
    sys.stdout.flush()
    if answer.get("error") is not None:
        raise answer["error"]
    return dict(answer["counts"])

