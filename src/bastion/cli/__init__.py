"""The ``bastion`` command. Each subcommand group lives in its own module and
registers itself here, so the command's surface is visible in one list."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="bastion",
    help="Contain, watch, record and stop autonomous agents that run code.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order is the order of `bastion --help`.
_COMMAND_MODULES = [
    "bastion.cli.run",
    "bastion.cli.check",
    "bastion.cli.audit",
    "bastion.cli.demo",
    "bastion.cli.cleanup",
    "bastion.cli.lab",
    "bastion.cli.serve",
    "bastion.cli.redteam",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
