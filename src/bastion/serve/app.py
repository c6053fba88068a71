"""The ASGI application of ``bastion serve`` and the function that runs it.

    app = create_app(ServeConfig(state_dir="/var/lib/bastion"))
    serve(app, host="127.0.0.1", port=8765)          # uvicorn, optional TLS

One process: a poller task reads the audit trail every ``poll_interval`` seconds (on
a worker thread) and feeds the index and the live stream; a verifier thread re-checks
every run's hash chain every ``verify_interval`` seconds; FastAPI serves the REST
API, ``/metrics`` and the dashboard. Nothing but ``/healthz`` answers without a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..audit.errors import AuditError
from ..events import Severity
from ..state import StateDir
from . import api, dashboard
from .actions import Recorder, SessionControl
from .auditstatus import Verifier
from .auth import TokenStore
from .context import AllRuns, Context, Ctx, Reader
from .index import Index
from .metrics import TrailCollector, registry_for
from .models import Health

__all__ = ["API_VERSION", "ServeConfig", "create_app", "serve"]

API_VERSION = "1.0.0"
log = logging.getLogger("bastion.serve")


@dataclass(frozen=True)
class ServeConfig:
    state_dir: str | Path | None = None
    poll_interval: float = 0.1  # seconds between reads of the trail
    verify_interval: float = 60.0  # seconds between full verifies
    admin_token: str | None = None  # from a flag or BASTION_ADMIN_TOKEN (never stored)
    stream_queue: int = 10_000  # records a slow stream client may fall behind
    violation_severity: str = "medium"  # verdicts counted as violations in charts


def create_app(config: ServeConfig | None = None, *,
               control: SessionControl | None = None) -> FastAPI:
    config = config or ServeConfig()
    state = StateDir.resolve(config.state_dir)
    index = Index(state.root)
    ctx = Context(state=state, index=index, verifier=Verifier(state, config.verify_interval),
                  tokens=TokenStore.for_state_dir(state, admin_token=config.admin_token),
                  control=control, violation_severity=Severity.parse(config.violation_severity))
    ctx.broadcaster.queue_size = config.stream_queue
    ctx.recorder = Recorder(state)
    index.lag_observer = ctx.lag.observe
    collector = TrailCollector(index, ctx.verifier, ctx.lag, lambda: (
        ctx.broadcaster.clients, ctx.broadcaster.delivered, ctx.broadcaster.dropped,
        ctx.broadcaster.undelivered))
    registry = registry_for(collector)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(_poll_once, ctx)  # the backlog, before the first request
        ctx.verifier.start()
        task = asyncio.create_task(_poller(ctx, config.poll_interval))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(ctx.verifier.stop)
            await asyncio.to_thread(ctx.recorder.close)
            index.close()

    app = FastAPI(title="bastion", version=API_VERSION, lifespan=lifespan,
                  description="The operator's view of bastion: runs, episodes, sessions, "
                  "calls, events, verdicts, actions and the audit trail's health, read from "
                  "the audit trail of one state directory.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.ctx = ctx

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> JSONResponse:
        """Liveness, without a token. Degraded when the trail cannot be read."""
        if ctx.poll_error:
            return JSONResponse(Health(status="degraded", detail=ctx.poll_error).model_dump(),
                                status_code=503)
        return JSONResponse(Health(status="ok").model_dump())

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                              "description": "Prometheus text format"}})
    def metrics(
        _: AllRuns,
) -> Response:
        """Prometheus metrics (an admin or all-runs reader token)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/openapi.json", tags=["service"], include_in_schema=False)
    def openapi(
        _: Reader,
        c: Ctx,
) -> dict[str, Any]:
        return app.openapi()

    app.include_router(api.router)
    app.include_router(dashboard.router)
    return app


def _poll_once(ctx: Context) -> list[Any]:
    """One read of the trail. A failure is not swallowed: /healthz answers 503 with it
    until a later poll succeeds, and it is logged."""
    try:
        fresh = ctx.index.poll()
    except (AuditError, OSError) as exc:
        ctx.poll_error = f"cannot read the audit trail: {exc}"
        log.error("%s", ctx.poll_error)
        return []
    except Exception as exc:  # a bug here must not stop the poller silently
        ctx.poll_error = f"reading the audit trail failed: {type(exc).__name__}: {exc}"
        log.exception("bastion serve: %s", ctx.poll_error)
        return []
    ctx.poll_error = None
    return fresh


async def _poller(ctx: Context, interval: float) -> None:
    milestones = ctx.index.milestones
    while True:
        fresh = await asyncio.to_thread(_poll_once, ctx)
        if fresh:
            ctx.broadcaster.publish(fresh)
        if ctx.index.milestones != milestones:
            milestones = ctx.index.milestones
            ctx.verifier.request()
        await asyncio.sleep(interval)


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8765,
          certfile: str | None = None, keyfile: str | None = None,
          access_log: bool = False) -> None:
    """Run the app with uvicorn until interrupted. TLS when a certificate is given.
    The access log is off by default: the dashboard's login URL carries a token."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile,
                access_log=access_log, log_level="warning")
