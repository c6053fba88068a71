"""Helpers shared by the CLI modules: errors as one actionable line and exit code 2."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer

from ..errors import BastionError, PolicyError, SandboxUnavailable

if TYPE_CHECKING:
    from ..policy import Policy

__all__ = ["PolicyOption", "StateDirOption", "fail", "load_policy", "user_errors"]

StateDirOption = typer.Option(
    None, "--state-dir", envvar="BASTION_STATE_DIR",
    help="bastion's state directory (audit trail, keys). Default: /var/lib/bastion",
)
PolicyOption = typer.Option(None, "--policy", "-p", help="policy YAML file (default: built-in)")


def fail(message: str, code: int = 2) -> typer.Exit:
    print(f"bastion: {message}", file=sys.stderr)
    return typer.Exit(code)


def load_policy(path: str | None) -> Policy:
    from ..policy import Policy

    return Policy.load(path) if path else Policy.default()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn bastion's own errors into one line on stderr and exit status 2."""
    try:
        yield
    except (SandboxUnavailable, PolicyError) as exc:
        raise fail(str(exc)) from None
    except BastionError as exc:
        raise fail(str(exc), code=1) from None
