"""Trainer-side handles on sessions that live on a node service (Ray actors).

``ClusterRun.open_session`` places a session on the node with the most free slots
and returns a ``RayRemoteSession``: the trainer's own loop (its LLM, its agent
scaffold) calls ``exec``, ``write_file``, ``read_file`` and ``close`` on it, and each
call runs in the session on that node, judged by that node's engine and recorded in
its spool (shipped to the run's trail by the driver's drains). The trainer process
carries none of the monitoring work. Every reply carries the verdicts raised since
the previous one (``verdicts`` accumulates them; ``poll_verdicts`` asks without a
call), so a trainer sees what a background process did between its calls.

A node that dies takes its sessions with it: the next call raises ``SessionBroken``
and the handle says ``infra_failed`` (not the agent's doing). A session the policy
ended raises ``SessionBroken`` too, with ``ended`` set and ``infra_failed`` None.
Each method has an ``a``-prefixed awaitable twin (Ray object refs are awaitable), for
trainers that drive many sessions from one asyncio loop; cancelling one cancels the
call on the node, which kills its processes.

Every call carries the session's own secret (``token``, from the node's
``open_session``); the node refuses a handle without it (``NotAuthorized``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SessionBroken
from ..events import Verdict
from ..results import ExecResult

__all__ = ["RayRemoteSession"]


@dataclass
class RayRemoteSession:
    """One session on a node actor, driven from the trainer."""

    actor: Any
    node_id: str
    session_id: str
    episode_id: str
    run_id: str
    token: str = field(default="", repr=False)  # the session's secret
    verdicts: list[Verdict] = field(default_factory=list)  # every one streamed back
    ended: str | None = None  # why the session stopped taking calls, once it did
    infra_failed: str | None = None  # set when it stopped for a reason not the agent's
    closed: bool = False
    _release: Any = None  # tells the run the node slot is free again

    # -- sync ---------------------------------------------------------------------------

    def exec(self, command: str | Sequence[str], *, step: int | None = None,
             call_id: str | None = None, timeout: float | None = None) -> ExecResult:
        return self._get(self._call("exec", command=_wire(command), step=step,
                                    call_id=call_id, timeout=timeout))

    def write_file(self, path: str, content: str, *, step: int | None = None,
                   call_id: str | None = None) -> ExecResult:
        return self._get(self._call("write_file", path=path, content=content, step=step,
                                    call_id=call_id))

    def read_file(self, path: str, *, step: int | None = None,
                  call_id: str | None = None) -> ExecResult:
        return self._get(self._call("read_file", path=path, step=step, call_id=call_id))

    def poll_verdicts(self) -> list[Verdict]:
        """Verdicts raised since the last reply, without a tool call."""
        import ray

        try:
            data = ray.get(self.actor.session_verdicts.remote(self.token, self.session_id))
        except ray.exceptions.RayActorError as exc:
            self._node_lost(exc)
            raise SessionBroken(self.infra_failed or "node lost") from exc
        return self._take(data)

    def close(self) -> list[Verdict]:
        """Close the session on its node (everything it started is killed). Returns
        the verdicts that were still on their way. Idempotent; a lost node's session
        is already gone."""
        import ray

        if self.closed:
            return []
        self.closed = True
        try:
            data = ray.get(self.actor.close_session.remote(self.token, self.session_id))
        except ray.exceptions.RayActorError as exc:
            self._node_lost(exc)
            return []
        finally:
            if self._release is not None:
                self._release()
        self.ended = self.ended or data.get("ended")
        self.infra_failed = self.infra_failed or data.get("infra_failed")
        return self._take(data.get("verdicts", []))

    # -- asyncio ------------------------------------------------------------------------

    async def aexec(self, command: str | Sequence[str], *, step: int | None = None,
                    call_id: str | None = None, timeout: float | None = None) -> ExecResult:
        return await self._aget(self._call("exec", command=_wire(command), step=step,
                                           call_id=call_id, timeout=timeout))

    async def awrite_file(self, path: str, content: str, *, step: int | None = None,
                          call_id: str | None = None) -> ExecResult:
        return await self._aget(self._call("write_file", path=path, content=content,
                                           step=step, call_id=call_id))

    async def aread_file(self, path: str, *, step: int | None = None,
                         call_id: str | None = None) -> ExecResult:
        return await self._aget(self._call("read_file", path=path, step=step,
                                           call_id=call_id))

    # -- plumbing -----------------------------------------------------------------------

    def _call(self, tool: str, **kwargs: Any) -> Any:
        if self.closed:
            raise SessionBroken(f"remote session {self.session_id} is closed")
        if self.ended is not None:
            raise SessionBroken(f"the session was ended: {self.ended}")
        return self.actor.session_call.remote(self.token, self.session_id, tool, **kwargs)

    def _get(self, ref: Any) -> ExecResult:
        import ray

        try:
            data = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._node_lost(exc)
            raise SessionBroken(self.infra_failed or "node lost") from exc
        return self._result(data)

    async def _aget(self, ref: Any) -> ExecResult:
        import ray

        try:
            data = await ref
        except asyncio.CancelledError:
            ray.cancel(ref)  # the node's task is cancelled: the call's processes killed
            raise
        except ray.exceptions.RayActorError as exc:
            self._node_lost(exc)
            raise SessionBroken(self.infra_failed or "node lost") from exc
        return self._result(data)

    def _result(self, data: dict[str, Any]) -> ExecResult:
        self._take(data.get("verdicts", []))
        self.ended = data.get("ended")
        self.infra_failed = self.infra_failed or data.get("infra_failed")
        if data.get("broken"):
            raise SessionBroken(data["broken"])
        result = ExecResult.from_dict(data["result"])
        return result

    def _take(self, raw: list[dict[str, Any]]) -> list[Verdict]:
        fresh = [Verdict.from_dict(v) for v in raw]
        self.verdicts.extend(fresh)
        return fresh

    def _node_lost(self, exc: BaseException) -> None:
        self.infra_failed = self.infra_failed or (
            f"node {self.node_id[:12]} lost ({type(exc).__name__}): its sessions died with it")
        self.ended = self.ended or self.infra_failed
        if self._release is not None and not self.closed:
            self.closed = True
            self._release()


def _wire(command: str | Sequence[str]) -> str | list[str]:
    return command if isinstance(command, str) else [str(c) for c in command]
