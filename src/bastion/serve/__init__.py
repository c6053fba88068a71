"""``bastion serve``: the operator's view of a state directory — a versioned REST API
with an OpenAPI document, a live stream (SSE) of verdicts and actions, Prometheus
``/metrics`` and an HTML dashboard, all read from the audit trail, behind bearer
tokens. Optional: needs the ``serve`` extra (FastAPI, uvicorn, prometheus_client,
sse-starlette).

Internal layout: ``index`` (tails every run's log into an in-memory picture),
``auditstatus`` (checkpoints, background verify), ``breaker`` (RL run summaries),
``auth`` (tokens), ``actions`` (operator actions and their audit records),
``stream`` (SSE fan-out), ``metrics``, ``api``, ``dashboard``, ``charts``, ``app``.
"""

from __future__ import annotations

from .actions import LocalSessions as LocalSessions
from .actions import SessionControl as SessionControl
from .app import ServeConfig as ServeConfig
from .app import create_app as create_app
from .app import serve as serve
from .auth import TokenStore as TokenStore

__all__ = ["LocalSessions", "ServeConfig", "SessionControl", "TokenStore", "create_app", "serve"]
