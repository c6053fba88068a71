"""`bastion cleanup`: remove what crashed bastion processes left behind."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from .common import StateDirOption, user_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("cleanup", help="Kill and remove sessions whose bastion process is gone.")(
        cleanup)


def cleanup(
    state_dir: Optional[str] = StateDirOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="only list what would be removed"),
) -> None:
    from ..host import Host
    from ..sandbox.cleanup import find_leftovers, remove_leftovers

    console = Console()
    with user_errors():
        host = Host.for_state_dir(state_dir)
        leftovers = find_leftovers(host.state, host.cgroups)
        for item in leftovers:
            parts = [p for p, present in (("cgroup", item.cgroup), ("dir", item.directory))
                     if present]
            console.print(f"{'would remove' if dry_run else 'removing'} {item.session_id} "
                          f"({', '.join(parts)})")
        if not dry_run:
            remove_leftovers(host.state, host.cgroups, leftovers)
            from ..gateway.plumbing import cleanup_stale

            console.print(f"{cleanup_stale()} dead gateway slot(s) cleared")
        console.print(f"{len(leftovers)} leftover session(s)"
                      + (" found" if dry_run else " removed"))
