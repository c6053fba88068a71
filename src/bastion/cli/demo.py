"""`bastion demo`: the main job of `make demo`."""

from __future__ import annotations

from typing import Optional

import typer

from .common import StateDirOption, user_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("demo", help="Watch bastion contain a scripted misbehaving agent.")(demo)


def demo(state_dir: Optional[str] = StateDirOption) -> None:
    from ..demo import run_demo

    with user_errors():
        code = run_demo(state_dir)
    raise typer.Exit(code)
