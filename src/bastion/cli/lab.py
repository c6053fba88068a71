"""`bastion lab up|down|status`: the simulated internet for trying policies safely."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from ..lab import Lab
from .common import fail, user_errors

__all__ = ["register"]

NameOption = typer.Option(None, "--name", envvar="BASTION_LAB",
                          help="lab name (a network namespace, starts with 'bst')")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The simulated internet (sshd, mining pool, web, DNS) "
                             "that `bastion run --lab` sessions reach.", no_args_is_help=True)
    group.command("up", help="Build the lab and start its servers (idempotent).")(up)
    group.command("down", help="Stop the lab's servers and remove its namespace.")(down)
    group.command("status", help="Per simulated host: connections and bytes received.")(status)
    app.add_typer(group, name="lab")


def up(name: str | None = NameOption,
       as_json: bool = typer.Option(False, "--json", help="print the status as JSON")) -> None:
    with user_errors():
        lab = _lab(name).up()
        _print(lab, as_json)


def down(name: str | None = NameOption) -> None:
    with user_errors():
        lab = _lab(name)
        lab.down()
        print(f"lab {lab.name} is down")


def status(name: str | None = NameOption,
           as_json: bool = typer.Option(False, "--json", help="print the status as JSON")) -> None:
    with user_errors():
        lab = _lab(name)
        _print(lab, as_json)
        if not lab.is_up():
            raise typer.Exit(1)


def _lab(name: str | None) -> Lab:
    try:
        return Lab(name)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _print(lab: Lab, as_json: bool) -> None:
    info = lab.status()
    if as_json:
        print(json.dumps(info.to_dict(), indent=2))
        return
    console = Console()
    if not info.up:
        console.print(f"lab {info.name} is down")
        return
    table = Table(title=f"lab {info.name} ({info.netns})")
    for column in ("host", "address", "names", "services", "connections", "bytes received"):
        table.add_column(column)
    for item in info.hosts:
        table.add_row(item["host"], item["ip"], ", ".join(item["names"]),
                      ", ".join(item["services"]), str(item["connections"]),
                      str(item["bytes_received"]))
    console.print(table)
    console.print(f"pool bytes recorded: {info.pool_bytes}   "
                  f"sshd connections logged: {info.sshd_connections}   "
                  f"test CA: {lab.ca_path}")
