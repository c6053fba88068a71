"""`bastion serve` (the dashboard, REST API, live stream and /metrics over a state
directory) and `bastion serve-token` (mint a token for it)."""

from __future__ import annotations

import sys

import typer

from .common import StateDirOption, fail, user_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("serve", help="Serve the operator's dashboard, REST API (/api/v1), live "
                              "stream and Prometheus /metrics over a state directory.")(serve)
    app.command("serve-token", help="Mint a token for `bastion serve`: admin, all-runs "
                                    "reader, or one run's reader.")(token)


def _imports() -> tuple[object, ...]:
    try:
        from ..serve import ServeConfig, TokenStore, create_app
        from ..serve import serve as run_server
    except ImportError as exc:  # the optional extra is missing
        raise fail(f"bastion serve needs the 'serve' extra ({exc.name} is missing): "
                   "pip install 'bastion[serve]'") from None
    return ServeConfig, TokenStore, create_app, run_server


def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8765, help="port to listen on"),
    admin_token: str | None = typer.Option(
        None, "--admin-token", envvar="BASTION_ADMIN_TOKEN",
        help="accept this admin token (never written down); otherwise tokens come from "
        "<state-dir>/serve/tokens.json"),
    tls_cert: str | None = typer.Option(None, "--tls-cert", help="PEM certificate (TLS)"),
    tls_key: str | None = typer.Option(None, "--tls-key", help="PEM private key (TLS)"),
    poll_interval: float = typer.Option(0.1, help="seconds between reads of the trail"),
    verify_interval: float = typer.Option(60.0, help="seconds between full verifies"),
    violation_severity: str = typer.Option(
        "medium", help="verdicts at or above this severity count as violations in charts"),
    access_log: bool = typer.Option(False, help="log every request (login URLs carry "
                                                "a token)"),
    state_dir: str | None = StateDirOption,
) -> None:
    ServeConfig, _, create_app, run_server = _imports()
    if bool(tls_cert) != bool(tls_key):
        raise fail("--tls-cert and --tls-key go together")
    with user_errors():
        config = ServeConfig(state_dir=state_dir, poll_interval=poll_interval,  # type: ignore[operator]
                             verify_interval=verify_interval, admin_token=admin_token,
                             violation_severity=violation_severity)
        app = create_app(config)  # type: ignore[operator]
        ctx = app.state.ctx
        tokens = ctx.tokens
        if not tokens.has_admin():
            admin = tokens.mint(admin=True, name="admin")
            print(f"admin token (shown once; digest kept in {tokens.path}): {admin}")
        viewer = tokens.mint(name="dashboard", replace=True)
    scheme = "https" if tls_cert else "http"
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"bastion serve: state {ctx.state.root}")
    print(f"dashboard: {scheme}://{shown}:{port}/ui/login?token={viewer}")
    print(f"API: {scheme}://{shown}:{port}/api/v1/openapi.json (Authorization: Bearer <token>)")
    if scheme == "http" and host not in ("127.0.0.1", "::1", "localhost"):
        print("warning: serving tokens over plain HTTP on a non-loopback address; "
              "pass --tls-cert/--tls-key", file=sys.stderr)
    sys.stdout.flush()
    run_server(app, host=host, port=port, certfile=tls_cert, keyfile=tls_key,  # type: ignore[operator]
               access_log=access_log)


def token(
    admin: bool = typer.Option(False, "--admin", help="an admin token (may act)"),
    run: str = typer.Option("*", "--run", help="the run this reader token may read "
                                              "('*': every run)"),
    name: str | None = typer.Option(None, help="a label shown in audit records"),
    state_dir: str | None = StateDirOption,
) -> None:
    _, TokenStore, _, _ = _imports()
    from ..state import StateDir

    with user_errors():
        store = TokenStore.for_state_dir(StateDir.resolve(state_dir))  # type: ignore[attr-defined]
        print(store.mint(admin=admin, run=run, name=name))
