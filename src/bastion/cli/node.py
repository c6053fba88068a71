"""`bastion node`: the per-node daemon that owns this machine's sessions."""

from __future__ import annotations

import logging
import sys

import typer

from .common import StateDirOption, fail, user_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("node", help="Run the node daemon: it owns this machine's sessions; "
                             "trainers and `bastion run` drive them over a local socket.")(node)
    app.command("node-token", help="Mint a token for one run from the running node "
                                   "daemon (it opens sessions of that run only).")(node_token)


def node(
    state_dir: str | None = StateDirOption,
    max_sessions: int = typer.Option(1024, "--max-sessions", min=1,
                                     help="refuse new sessions beyond this many"),
    warm: int = typer.Option(1, "--warm", min=0, max=64,
                             help="keep this many default-policy sessions ready for "
                                  "one-shot `bastion run` (each holds a sandbox while "
                                  "idle; 0: none, every run pays a session's creation)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every start and refusal"),
) -> None:
    """Serve until SIGTERM or Ctrl-C; then every session is closed and recorded.

    The socket's path is written to <state>/node/address and the admin token to
    <state>/node/token (root only). A daemon that starts removes what a dead one left."""
    from ..daemon.server import NodeServer, NodeStartError

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    with user_errors():
        server = NodeServer(state_dir, max_sessions=max_sessions, warm=warm)
        print(f"bastion node: serving {server.state.root}; socket path in "
              f"{server.address.address_file}", file=sys.stderr, flush=True)
        try:
            server.run()
        except NodeStartError as exc:
            raise fail(str(exc)) from None


def node_token(
    run_id: str = typer.Argument(..., help="the run the token is for"),
    state_dir: str | None = StateDirOption,
) -> None:
    from ..daemon import NodeClient

    with user_errors():
        print(NodeClient.for_state_dir(state_dir).run_token(run_id))
