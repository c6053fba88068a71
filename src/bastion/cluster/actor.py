"""``NodeActor``: the Ray face of a ``NodeService``, asyncio and authenticated.

Every method is a coroutine, so Ray runs the actor as an *async actor*: calls are
tasks on the actor's one event loop, at most ``max_concurrency`` at a time (set by
``ClusterRun``), never a thread per call. A remote session's tool call runs as
``AsyncSession.exec`` on that loop (the supervisor's socket and the call's pipes are
watched by the loop; the short blocking steps run on the session's own executor), and
at most ``slots`` of them run at once. What blocks (running a scripted episode,
creating a sandbox, closing one, shutting down) runs on the service's long-lived
threads or bastion's lifecycle pool, awaited.

Whoever drives the actor must prove it belongs to the run:

- control methods (episodes, drains, opening sessions, shutdown) take the run's
  secret, which the driver made at ``ClusterRun.start`` and gave each actor at
  creation (never in an actor name or option);
- a remote session's calls take that session's own secret, returned by
  ``open_session`` to the driver only: one session's handle cannot drive another.

Why a per-run secret and not the node daemon's token (``bastion node``): the actors
are not the daemon. Each ``ClusterRun`` creates its own actors, holding its own
sessions and trail, for the run's lifetime; whoever can reach one is a process on the
Ray cluster (another trainer, a stale driver, a job), not a local user of the node's
socket. The run is therefore the unit of trust: a run's secret lets its driver drive
*its* actors and nothing else, a second run on the same cluster holds a different one
(tests/cluster/test_remote.py: a handle of another run is refused), and a leaked
session secret reaches one session only. The daemon's token guards a different door
(the node's local socket, file permissions).

A call with a missing or wrong secret raises ``NotAuthorized`` before it touches
anything, and is counted (``info()["refused"]``). Cancelling the trainer's awaitable
(``RayRemoteSession.aexec``) cancels the task here, which kills the call's processes
(``AsyncSession``'s cancellation).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from ..aio import AsyncSession, _lifecycle_pool
from ..errors import BastionError, SessionBroken, SessionClosed
from ..policy import Policy
from .node import EpisodeSpec, NodeService
from .shipping import Shipped

__all__ = ["NodeActor", "NotAuthorized"]

T = TypeVar("T")


class NotAuthorized(BastionError, PermissionError):
    """A call to a node actor without the run's (or the session's) secret."""


class NodeActor:
    """One per Ray node, wrapping that node's ``NodeService``."""

    def __init__(self, node_id: str, *, token: str, run_id: str, state_dir: str,
                 policy: Policy, env_options: dict[str, Any] | None = None,
                 slots: int = 4) -> None:
        if not token:
            raise NotAuthorized("a node actor needs the run's secret")
        self._token = token
        self.slots = max(1, slots)
        self.service = NodeService(node_id, run_id=run_id, state_dir=state_dir,
                                   policy=policy, env_options=env_options, slots=slots)
        self._session_tokens: dict[str, str] = {}
        self._async: dict[str, AsyncSession] = {}
        self._calls: asyncio.Semaphore | None = None  # made on the actor's loop
        self.refused = 0

    # -- authentication -----------------------------------------------------------------

    def _check(self, token: object) -> None:
        if not (isinstance(token, str) and hmac.compare_digest(token.encode(),
                                                               self._token.encode())):
            self.refused += 1
            raise NotAuthorized("refused: this call does not carry the run's secret")

    def _check_session(self, session_id: str, token: object) -> None:
        expected = self._session_tokens.get(session_id)
        if expected is None or not (isinstance(token, str) and hmac.compare_digest(
                token.encode(), expected.encode())):
            self.refused += 1
            raise NotAuthorized(f"refused: this call does not carry session {session_id}'s "
                                "secret")

    async def _threaded(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Blocking work on the service's long-lived threads (sandboxes are started
        there: bwrap's parent-death signal follows the thread that started it)."""
        return await asyncio.wrap_future(
            self.service._pool.submit(functools.partial(fn, *args, **kwargs)))

    async def _lifecycle(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_lifecycle_pool(), functools.partial(fn, *args))

    # -- episodes and records (the run's secret) ----------------------------------------

    async def run_episode(self, token: str, spec: EpisodeSpec) -> dict[str, Any]:
        """Run one scripted episode on this node (``NodeService.run_episode``)."""
        self._check(token)
        return await self._threaded(self.service._run, spec)

    async def drain(self, token: str) -> list[Shipped]:
        self._check(token)
        return self.service.drain()

    async def acknowledge(self, token: str) -> None:
        self._check(token)
        self.service.acknowledge()

    async def spool_records(self, token: str) -> int:
        self._check(token)
        return self.service.spool_records()

    async def info(self, token: str) -> dict[str, Any]:
        self._check(token)
        return {**self.service.info(), "refused": self.refused,
                "remote_sessions": len(self._session_tokens)}

    async def session_pids(self, token: str) -> dict[str, list[int]]:
        self._check(token)
        return self.service.session_pids()

    async def shutdown(self, token: str, reason: str = "node service shutting down") -> int:
        self._check(token)
        return await self._lifecycle(self.service.shutdown, reason)

    # -- remote sessions ----------------------------------------------------------------

    async def open_session(self, token: str, episode_id: str, *, image: str | None = None,
                           policy: Policy | None = None) -> dict[str, Any]:
        """Open a session for the trainer; the reply carries the session's own
        secret, which every later call on it must present."""
        self._check(token)
        data = await self._lifecycle(
            functools.partial(self.service.open_session, episode_id, image=image,
                              policy=policy))
        if data.get("session_id"):
            secret = secrets.token_urlsafe(32)
            self._session_tokens[data["session_id"]] = secret
            data["session_token"] = secret
        return data

    async def session_call(self, session_token: str, session_id: str, tool: str, *,
                           command: str | list[str] = "", path: str = "", content: str = "",
                           step: int | None = None, call_id: str | None = None,
                           timeout: float | None = None) -> dict[str, Any]:
        """One tool call in a remote session, on this actor's loop."""
        self._check_session(session_id, session_token)
        session, seen = self.service._remote_session(session_id)
        aio = self._async.get(session_id)
        if aio is None:
            aio = self._async[session_id] = AsyncSession.wrap(session)
        if self._calls is None:
            self._calls = asyncio.Semaphore(self.slots)
        result = None
        broken = None
        async with self._calls:
            try:
                if tool == "exec":
                    result = await aio.exec(command, step=step, call_id=call_id,
                                            timeout=timeout)
                elif tool == "write_file":
                    result = await aio.write_file(path, content, step=step, call_id=call_id)
                elif tool == "read_file":
                    result = await aio.read_file(path, step=step, call_id=call_id)
                else:
                    raise ValueError(f"unknown tool {tool!r}")
            except SessionBroken as exc:
                broken = str(exc)
        await aio.settle()
        return {"result": result.to_dict() if result is not None else None,
                "broken": broken, "ended": session.ended,
                "infra_failed": session.infra_failure,
                "verdicts": self.service._fresh_verdicts(session, seen)}

    async def session_verdicts(self, session_token: str,
                               session_id: str) -> list[dict[str, Any]]:
        self._check_session(session_id, session_token)
        session, seen = self.service._remote_session(session_id)
        return self.service._fresh_verdicts(session, seen)

    async def close_session(self, session_token: str, session_id: str) -> dict[str, Any]:
        self._check_session(session_id, session_token)
        self._session_tokens.pop(session_id, None)
        self._async.pop(session_id, None)
        try:
            return await self._lifecycle(self.service.close_session, session_id)
        except SessionClosed:
            return {"closed": False, "verdicts": [], "ended": None, "infra_failed": None}
