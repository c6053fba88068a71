"""The ``bastion`` command. Each subcommand group lives in its own module and
registers itself here, so the command's surface is visible in one list.

``main()`` (the console script) imports only the module of the command it was given:
``bastion check`` must not pay for the sandbox, the lab, the server and the red-team
runner on every call. ``app`` (the whole command, for tests and ``--help``) is built on
first use. ``bastion run`` and ``bastion check`` are first offered to a running node
daemon by ``cli.oneshot``, which imports neither typer nor any of bastion's machinery.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # not typing's: a one-shot command does not import typing
if TYPE_CHECKING:
    from typing import Any

    import typer

# module -> the commands it registers. Order is the order of `bastion --help`.
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "bastion.cli.run": ("run", "shell"),
    "bastion.cli.check": ("check",),
    "bastion.cli.audit": ("audit", "incidents", "report", "replay"),
    "bastion.cli.demo": ("demo",),
    "bastion.cli.cleanup": ("cleanup",),
    "bastion.cli.lab": ("lab",),
    "bastion.cli.node": ("node", "node-token"),
    "bastion.cli.serve": ("serve", "serve-token"),
    "bastion.cli.redteam": ("redteam",),
}


def _typer() -> typer.Typer:
    import typer

    return typer.Typer(
        name="bastion",
        help="Contain, watch, record and stop autonomous agents that run code.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def build_app(only: str | None = None) -> typer.Typer:
    """The command with every subcommand, or only the module that registers ``only``.

    With one subcommand registered, typer would make it the whole program (``bastion
    check`` would become ``bastion``); a hidden callback keeps it a group."""
    app = _typer()
    modules = [m for m, names in _COMMAND_MODULES.items() if only is None or only in names]
    for name in modules:
        importlib.import_module(name).register(app)
    if only is not None:
        app.callback()(lambda: None)
    return app


def _module_for(argv: list[str]) -> str | None:
    """The command named on the command line, if it is a known one (else None: help, a
    typo and a bare ``bastion`` get the whole command and its usual messages)."""
    for arg in argv:
        if arg.startswith("-"):
            return None  # a global option or --help: the whole command answers
        known = any(arg in names for names in _COMMAND_MODULES.values())
        return arg if known else None
    return None


def main() -> None:
    if sys.argv[1:2] in (["run"], ["check"]):
        # a running node answers these with nothing imported here (see cli.oneshot)
        from .oneshot import answer

        code = answer(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    only = _module_for(sys.argv[1:])
    build_app(only)(prog_name="bastion")


def __getattr__(name: str) -> Any:
    if name == "app":
        value = build_app()
        globals()["app"] = value
        return value
    raise AttributeError(f"module 'bastion.cli' has no attribute {name!r}")
