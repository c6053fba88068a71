"""What every route needs: the index, the verifier, the token store, the live-stream
broadcaster, the optional session control; and the authentication dependencies.

A request authenticates with ``Authorization: Bearer <token>`` or, for the dashboard
in a browser, the ``bastion_token`` cookie set by ``/ui/login``. The cookie is
HttpOnly and SameSite=Strict and is never accepted for operator actions (which take
the header only), so a page elsewhere cannot make a logged-in browser act.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..audit.reader import Record
from ..events import Severity
from ..state import StateDir
from .actions import Recorder, RefusalLimiter, SessionControl
from .auditstatus import Verifier
from .auth import Principal, TokenStore
from .index import Index, SessionInfo, severity_rank
from .metrics import LagHistogram
from .stream import Broadcaster

__all__ = [
    "COOKIE",
    "AllRuns",
    "Context",
    "Ctx",
    "HeaderPrincipal",
    "Reader",
    "bearer",
    "context",
    "principal_from_header",
    "require_all_runs",
    "require_reader",
]

COOKIE = "bastion_token"
T = TypeVar("T")
bearer = HTTPBearer(auto_error=False, description="a bastion serve token (admin, all-runs "
                    "reader, or one run's reader)")


@dataclass
class Context:
    state: StateDir
    index: Index
    verifier: Verifier
    tokens: TokenStore
    control: SessionControl | None
    broadcaster: Broadcaster = field(default_factory=Broadcaster)
    lag: LagHistogram = field(default_factory=LagHistogram)
    violation_severity: Severity = Severity.MEDIUM
    poll_error: str | None = None
    recorder: Recorder | None = None  # set by create_app
    refusals: RefusalLimiter = field(default_factory=RefusalLimiter)
    _memo: dict[Any, tuple[int, float, Any]] = field(default_factory=dict)

    def memo(self, key: Any, compute: Callable[[], T], max_age: float = 1.0) -> T:
        """``compute()``, reused while the index has read nothing new and for at most
        ``max_age`` seconds (some state, like a session's directory, is not in the
        trail). Many clients polling the same views cost one computation per change."""
        version, now = self.index.version, time.monotonic()
        hit = self._memo.get(key)
        if hit is not None and hit[0] == version and now - hit[1] < max_age:
            return hit[2]  # type: ignore[no-any-return]
        value = compute()
        if len(self._memo) > 1024:
            self._memo.clear()
        self._memo[key] = (version, now, value)
        return value

    def is_violation(self, verdict: Record) -> bool:
        return severity_rank(verdict.data.get("severity")) >= int(self.violation_severity)

    def visible_sessions(self, who: Principal) -> list[SessionInfo]:
        return [s for s in self.index.snapshot_sessions() if who.may_read(s.run_id)]


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_reader(request: Request, creds: Credentials) -> Principal:
    """Any valid token (header or dashboard cookie)."""
    ctx = context(request)
    token = creds.credentials if creds is not None else request.cookies.get(COOKIE)
    if not token:
        raise _unauthorized("a bearer token is required")
    who = ctx.tokens.authenticate(token)
    if who is None:
        raise _unauthorized("unknown token")
    return who


def require_all_runs(who: Annotated[Principal, Depends(require_reader)]) -> Principal:
    if not who.all_runs:
        raise HTTPException(403, "this token may read one run only")
    return who


def principal_from_header(request: Request, creds: Credentials) -> Principal | None:
    """The principal of an Authorization header only (operator actions): None when
    there is no valid header token."""
    if creds is None:
        return None
    return context(request).tokens.authenticate(creds.credentials)


Ctx = Annotated[Context, Depends(context)]
Reader = Annotated[Principal, Depends(require_reader)]
AllRuns = Annotated[Principal, Depends(require_all_runs)]
HeaderPrincipal = Annotated[Principal | None, Depends(principal_from_header)]
