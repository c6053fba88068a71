"""Thin handles on a node daemon's sessions, for trainers (sync and asyncio).

A handle does no monitoring work of its own: it sends a tool call and returns the
``ExecResult`` the daemon's session produced, verdicts included. Each session has its
own connection, so a session dies with the handle's process and one slow call never
queues behind another session's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ..errors import SessionBroken, SessionClosed
from ..events import Verdict
from ..results import ExecResult
from .protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    NodeAddress,
    b64,
    decode_frame,
    encode_frame,
    error_from_wire,
    unb64,
)

__all__ = ["AsyncNodeClient", "AsyncRemoteSession", "NodeClient", "NodeUnavailable",
           "RemoteSession"]


class NodeUnavailable(SessionBroken):
    """The node daemon cannot be reached, or went away under a session. An
    infrastructure failure (``infra_failed``), never the agent's doing."""

    infra_failed = True


def _state_root(state_dir: str | os.PathLike[str] | None) -> Path:
    """The state directory's path, without creating it (a client only looks)."""
    from ..state import DEFAULT_STATE_DIR

    raw = state_dir or os.environ.get("BASTION_STATE_DIR") or DEFAULT_STATE_DIR
    return Path(raw).absolute()


def _policy_text(policy: Any) -> tuple[str | None, str | None]:
    """A policy as the daemon loads it: YAML text (a Policy, a path, or YAML)."""
    if policy is None:
        return None, None
    if isinstance(policy, (str, os.PathLike)) and Path(policy).is_file():
        return Path(policy).read_text(), str(policy)
    if isinstance(policy, str):
        return policy, "<client>"
    text = getattr(policy, "text", "")
    if not text:
        import yaml

        text = yaml.safe_dump(policy.model.model_dump(mode="json"), sort_keys=False)
    return text, getattr(policy, "source", "<client>")


def _open_message(policy: Any, run_id: str, episode_id: str, image: str | None,
                  lab: bool) -> dict[str, Any]:
    text, source = _policy_text(policy)
    msg: dict[str, Any] = {"op": "open", "run_id": run_id, "episode_id": episode_id,
                           "lab": lab}
    if text is not None:
        msg["policy"], msg["policy_source"] = text, source
    if image is not None:
        msg["image"] = str(image)
    return msg


def _exec_message(session: str, cmd: str | Sequence[str], *, step: int | None,
                  call_id: str | None, timeout: float | None, stdin: str | bytes | None,
                  env: Mapping[str, str] | None, cwd: str | None) -> dict[str, Any]:
    msg: dict[str, Any] = {"op": "exec", "session": session,
                           "cmd": cmd if isinstance(cmd, str) else list(cmd),
                           "step": step, "call_id": call_id, "timeout": timeout,
                           "env": dict(env) if env is not None else None, "cwd": cwd}
    if stdin is not None:
        msg["stdin_b64"] = b64(stdin.encode() if isinstance(stdin, str) else stdin)
    return msg


def _answer(reply: dict[str, Any]) -> dict[str, Any]:
    if not reply.get("ok"):
        raise error_from_wire(reply.get("error") or {})
    return reply


class NodeClient:
    """Where a node daemon listens and the token to use.

    >>> client = NodeClient.for_state_dir()          # the local daemon, admin token
    >>> with client.session(run_id="r1", episode_id="e1") as s:
    ...     s.exec("pytest -q", step=0)
    """

    def __init__(self, socket_path: str | os.PathLike[str], token: str) -> None:
        self.socket_path = Path(socket_path)
        self.token = token

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str] | None = None, *,
                      token: str | None = None) -> NodeClient:
        """The daemon serving this state directory; raises ``NodeUnavailable`` when none
        has published its socket."""
        address = NodeAddress(_state_root(state_dir))
        path = address.published_socket()
        token = token or address.read_token()
        if path is None or token is None:
            raise NodeUnavailable(f"no bastion node serves {address.state_root} "
                                  "(start one with `bastion node`)")
        return cls(path, token)

    @classmethod
    def running(cls, state_dir: str | os.PathLike[str] | None = None) -> NodeClient | None:
        """The daemon of this state directory if one answers, else None (one-shot CLI
        use: go through the daemon when there is one)."""
        try:
            client = cls.for_state_dir(state_dir)
            client.ping()
        except (NodeUnavailable, OSError):
            return None
        return client

    def _connect(self) -> _Connection:
        return _Connection.open(self.socket_path, self.token)

    def ping(self) -> dict[str, Any]:
        with self._connect() as conn:
            return conn.request({"op": "ping"})

    def check(self, text: str, *, policy: Any = None, as_json: bool = False) -> dict[str, Any]:
        """`bastion check` on the node: ``{"output": str, "counts": {...}}``. On a bad
        input line, ``counts`` is None and ``error`` the ``PolicyError`` to raise after
        the output of the lines before it is written."""
        policy_text, source = _policy_text(policy)
        with self._connect() as conn:
            answer = conn.request({"op": "check", "input": text, "policy": policy_text,
                                   "policy_source": source, "json": as_json})
        if answer.get("error"):
            answer["error"] = error_from_wire(answer["error"])
        return answer

    def run_token(self, run_id: str) -> str:
        """A token that opens sessions of ``run_id`` only (hand it to a trainer)."""
        with self._connect() as conn:
            return str(conn.request({"op": "run_token", "run_id": run_id})["token"])

    def session(self, policy: Any = None, *, run_id: str = "", episode_id: str = "",
                image: str | os.PathLike[str] | None = None,
                lab: bool = False) -> RemoteSession:
        conn = self._connect()
        try:
            info = conn.request(_open_message(policy, run_id, episode_id,
                                              str(image) if image else None, lab))
        except BaseException:
            conn.close()
            raise
        return RemoteSession(conn, info)


class _Connection:
    """A blocking, authenticated connection: one request at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self._ids = itertools.count(1)

    @classmethod
    def open(cls, path: Path, token: str) -> _Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise NodeUnavailable(f"cannot reach the bastion node at {path}: "
                                  f"{exc.strerror or exc}") from None
        conn = cls(sock)
        try:
            conn.request({"op": "hello", "version": PROTOCOL_VERSION, "token": token})
        except BaseException:
            conn.close()
            raise
        return conn

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        rid = next(self._ids)
        try:
            self._sock.sendall(encode_frame({**msg, "id": rid}))
            line = self._file.readline(MAX_FRAME + 1)
        except OSError as exc:
            raise NodeUnavailable(f"the bastion node went away: {exc}") from None
        if not line:
            raise NodeUnavailable("the bastion node went away (connection closed)")
        return _answer(decode_frame(line))

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handle:
    """What a sync and an asyncio handle share: the session's attribution, its state
    on this side, and the requests' shapes."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.session_id: str = info["session"]
        self.run_id: str = info["run_id"]
        self.episode_id: str = info["episode_id"]
        self.policy_hash: str = info.get("policy_hash", "")
        self.policy_name: str = info.get("policy_name", "")
        self._closed = False
        self._seen = 0
        self.verdicts: list[Verdict] = []

    def _addressed(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise SessionClosed(f"session {self.session_id} is closed")
        return {**msg, "session": self.session_id}

    @staticmethod
    def _write_message(path: str, content: str | bytes, step: int | None,
                       call_id: str | None) -> dict[str, Any]:
        data = content.encode() if isinstance(content, str) else content
        return {"op": "write_file", "path": path, "content_b64": b64(data), "step": step,
                "call_id": call_id}

    @staticmethod
    def _read_message(path: str, step: int | None, call_id: str | None) -> dict[str, Any]:
        return {"op": "read_file", "path": path, "step": step, "call_id": call_id}

    @staticmethod
    def _trust_message(path: str, sha256: str) -> dict[str, Any]:
        return {"op": "trust", "path": path, "sha256": sha256}

    def _verdicts_message(self, wait: float) -> dict[str, Any]:
        return {"op": "verdicts", "since": self._seen, "wait": wait}

    def _take_verdicts(self, reply: dict[str, Any]) -> list[Verdict]:
        new = [Verdict.from_dict(v) for v in reply["verdicts"]]
        self._seen = int(reply["next"])
        self.verdicts.extend(new)
        return new

    @staticmethod
    def _file(reply: dict[str, Any]) -> tuple[bytes, ExecResult]:
        return unb64(reply["content_b64"]), ExecResult.from_dict(reply["result"])


class RemoteSession(_Handle):
    """A session living in the node daemon; the same calls as ``Session``."""

    def __init__(self, conn: _Connection, info: dict[str, Any]) -> None:
        super().__init__(info)
        self._conn = conn

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        return self._conn.request(self._addressed(msg))

    def exec(self, cmd: str | Sequence[str], *, step: int | None = None,
             call_id: str | None = None, timeout: float | None = None,
             stdin: str | bytes | None = None, env: Mapping[str, str] | None = None,
             cwd: str | None = None) -> ExecResult:
        reply = self._request(_exec_message(self.session_id, cmd, step=step, call_id=call_id,
                                            timeout=timeout, stdin=stdin, env=env, cwd=cwd))
        return ExecResult.from_dict(reply["result"])

    def write_file(self, path: str, content: str | bytes, *, step: int | None = None,
                   call_id: str | None = None) -> ExecResult:
        reply = self._request(self._write_message(path, content, step, call_id))
        return ExecResult.from_dict(reply["result"])

    def read_file(self, path: str, *, step: int | None = None,
                  call_id: str | None = None) -> tuple[bytes, ExecResult]:
        """The file's exact bytes and the result of the call that read them."""
        return self._file(self._request(self._read_message(path, step, call_id)))

    def poll_verdicts(self, wait: float = 0.0) -> list[Verdict]:
        """Verdicts not returned by this method before (late ones included), waiting up
        to ``wait`` seconds for one."""
        return self._take_verdicts(self._request(self._verdicts_message(wait)))

    def trust_executable(self, path: str, sha256: str) -> None:
        """``Session.trust_executable``: the harness's own program at ``path``."""
        self._request(self._trust_message(path, sha256))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._request({"op": "close"})
        except NodeUnavailable:
            pass  # the daemon is gone: so is the session
        finally:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- asyncio ------------------------------------------------------------------------------


class AsyncNodeClient:
    """The asyncio twin of ``NodeClient``: no thread per call, one event loop for
    thousands of sessions.

    >>> client = AsyncNodeClient.for_state_dir()
    >>> async with await client.session(run_id="r1", episode_id="e1") as s:
    ...     result = await s.exec("pytest -q", step=0)
    """

    def __init__(self, socket_path: str | os.PathLike[str], token: str) -> None:
        self.socket_path = Path(socket_path)
        self.token = token

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str] | None = None, *,
                      token: str | None = None) -> AsyncNodeClient:
        sync = NodeClient.for_state_dir(state_dir, token=token)
        return cls(sync.socket_path, sync.token)

    async def session(self, policy: Any = None, *, run_id: str = "", episode_id: str = "",
                      image: str | os.PathLike[str] | None = None,
                      lab: bool = False) -> AsyncRemoteSession:
        conn = await _AsyncConnection.open(self.socket_path, self.token)
        try:
            info = await conn.request(_open_message(policy, run_id, episode_id,
                                                    str(image) if image else None, lab))
        except BaseException:
            await conn.close()
            raise
        return AsyncRemoteSession(conn, info)


class _AsyncConnection:
    """Requests on one connection may overlap: answers are matched by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._lost: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, path: Path, token: str) -> _AsyncConnection:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_FRAME)
        except OSError as exc:
            raise NodeUnavailable(f"cannot reach the bastion node at {path}: "
                                  f"{exc.strerror or exc}") from None
        conn = cls(reader, writer)
        try:
            await conn.request({"op": "hello", "version": PROTOCOL_VERSION, "token": token})
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _read(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                reply = decode_frame(line)
                fut = self._pending.pop(reply.get("id"), None)  # type: ignore[arg-type]
                if fut is not None and not fut.done():
                    fut.set_result(reply)
        except (OSError, ValueError) as exc:
            self._lost = exc
        finally:
            lost = NodeUnavailable("the bastion node went away (connection closed)")
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(lost)
            self._pending.clear()
            self._lost = self._lost or lost

    def send(self, msg: dict[str, Any]) -> tuple[int, asyncio.Future[dict[str, Any]]]:
        if self._lost is not None:
            raise NodeUnavailable("the bastion node went away (connection closed)")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write(encode_frame({**msg, "id": rid}))
        return rid, fut

    def forget(self, rid: int) -> None:
        fut = self._pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.cancel()

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        _, fut = self.send(msg)
        return _answer(await fut)

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass
        self._task.cancel()


class AsyncRemoteSession(_Handle):
    """``await session.exec(...)``; cancelling the await kills the call in the sandbox."""

    def __init__(self, conn: _AsyncConnection, info: dict[str, Any]) -> None:
        super().__init__(info)
        self._conn = conn

    async def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        return await self._conn.request(self._addressed(msg))

    async def exec(self, cmd: str | Sequence[str], *, step: int | None = None,
                   call_id: str | None = None, timeout: float | None = None,
                   stdin: str | bytes | None = None, env: Mapping[str, str] | None = None,
                   cwd: str | None = None) -> ExecResult:
        rid, fut = self._conn.send(self._addressed(_exec_message(
            self.session_id, cmd, step=step, call_id=call_id, timeout=timeout, stdin=stdin,
            env=env, cwd=cwd)))
        try:
            reply = await asyncio.shield(fut)
        except asyncio.CancelledError:
            # the caller gave up: the call must not go on running in the sandbox
            if not fut.done():
                try:
                    await asyncio.wait_for(self._conn.request(
                        {"op": "cancel", "session": self.session_id, "request": rid}), 15)
                except (Exception, asyncio.CancelledError):  # noqa: BLE001, S110 - best effort:
                    pass  # the connection ending kills the call too
            self._conn.forget(rid)  # its answer, if one still comes, is not waited for
            raise
        return ExecResult.from_dict(_answer(reply)["result"])

    async def write_file(self, path: str, content: str | bytes, *, step: int | None = None,
                         call_id: str | None = None) -> ExecResult:
        reply = await self._request(self._write_message(path, content, step, call_id))
        return ExecResult.from_dict(reply["result"])

    async def read_file(self, path: str, *, step: int | None = None,
                        call_id: str | None = None) -> tuple[bytes, ExecResult]:
        return self._file(await self._request(self._read_message(path, step, call_id)))

    async def poll_verdicts(self, wait: float = 0.0) -> list[Verdict]:
        return self._take_verdicts(await self._request(self._verdicts_message(wait)))

    async def trust_executable(self, path: str, sha256: str) -> None:
        await self._request(self._trust_message(path, sha256))

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self._request({"op": "close"})
        except NodeUnavailable:
            pass
        finally:
            self._closed = True
            await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
