"""The node daemon: one process that owns a machine's bastion sessions.

It answers the protocol of ``protocol.py`` on a unix socket. Each blocking session
operation (create, exec, close) runs on a worker thread of the daemon, so a slow call
holds nobody else; every call still goes through the one ``Session`` code path
(analysis, sensors, engine, responder, audit), exactly as in-process use does.

What the daemon guarantees:

* nobody without a token gets past ``hello`` (and the socket is root's, mode 0600);
* a run token opens sessions of its own run only;
* a session lives as long as the connection that opened it: when a trainer goes away,
  its sessions are closed, their processes killed and recorded;
* one daemon per state directory (an ``flock``); at start it removes what a dead daemon
  left (sessions, cgroups, gateway slots), through the same cleanup as ``bastion
  cleanup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BastionError, SandboxUnavailable, SessionClosed
from ..state import StateDir
from .protocol import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    NodeAddress,
    NotAuthorized,
    ProtocolError,
    b64,
    decode_frame,
    encode_frame,
    error_to_wire,
    unb64,
)

__all__ = ["NodeServer", "NodeStartError"]

log = logging.getLogger(__name__)


class NodeStartError(BastionError):
    """The daemon cannot start (another one runs for this state directory, ...)."""


@dataclass(eq=False)
class _Client:
    """One connection: who it is and the sessions it opened."""

    run_id: str | None  # None: the admin token (any run)
    sessions: dict[str, Any] = field(default_factory=dict)
    inflight: dict[Any, asyncio.Task[None]] = field(default_factory=dict)  # request id -> task


class NodeServer:
    """``NodeServer(state_dir).run()`` serves until SIGTERM/SIGINT (or ``stop()``)."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None, *,
                 max_sessions: int = 1024, warm: int = 0,
                 session_factory: Callable[..., Any] | None = None) -> None:
        self.state = StateDir.resolve(state_dir)
        self.address = NodeAddress(self.state.root)
        self.max_sessions = max_sessions
        # sessions of the default policy created ahead of time for one-shot use
        # (`bastion run`): an open that asks for nothing else takes one at once
        self.warm = max(0, warm)
        self._spares: list[asyncio.Task[Any]] = []
        self._closing: set[asyncio.Task[Any]] = set()
        self.spares_used = 0
        self._session_factory = session_factory
        self._admin_token = ""
        self._run_tokens: dict[str, str] = {}  # token -> run id
        self._clients: set[_Client] = set()
        # only session creation and `bastion check` block here: calls run on the loop
        # (AsyncSession), and sandbox launches are admitted a few at a time anyway
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1)),
                                        thread_name_prefix="bastion-node")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._lock_fd: int | None = None
        self._socket: Path | None = None
        self.ready = threading.Event()  # set once the socket answers (tests, embedders)
        self._checkers: dict[str, tuple[Any, Any]] = {}  # policy text -> (policy, ruleset)
        self._checkers_lock = threading.Lock()
        self.checked = 0  # `bastion check` inputs answered

    # -- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        asyncio.run(self.serve())

    def stop(self) -> None:
        """From any thread: stop accepting, close every session, remove the socket."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._take_lock()
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._remove_leftovers)
            self._write_token()
            server = await self._listen()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
                    self._loop.add_signal_handler(sig, self._stopping.set)
            self._refill()
            self.ready.set()
            log.info("bastion node: serving %s on %s", self.state.root, self._socket)
            async with server:
                await self._stopping.wait()
                server.close()
            await self._close_all()
            await self._close_spares()
        finally:
            self._unpublish()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._release_lock()

    def _take_lock(self) -> None:
        self.state.ensure()
        self.address.dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.address.dir, 0o700)
        fd = os.open(self.address.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise NodeStartError(
                f"a bastion node already serves {self.state.root} "
                f"(socket {self.address.published_socket()})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _remove_leftovers(self) -> None:
        """What a dead daemon (or any dead bastion process) of this state dir left."""
        from ..host import Host
        from ..sandbox.cleanup import find_leftovers, remove_leftovers

        host = Host.for_state_dir(self.state.root)
        leftovers = find_leftovers(host.state, host.cgroups)
        if leftovers:
            log.warning("bastion node: removing %d leftover session(s): %s", len(leftovers),
                        ", ".join(item.session_id for item in leftovers))
            remove_leftovers(host.state, host.cgroups, leftovers)

    def _write_token(self) -> None:
        self._admin_token = secrets.token_urlsafe(32)
        tmp = self.address.token_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._admin_token + "\n")
        os.replace(tmp, self.address.token_file)

    async def _listen(self) -> asyncio.AbstractServer:
        path = self.address.socket_path()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # ours: the lock says no other daemon serves this state dir
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._serve_client, path=str(path),
                                                     limit=MAX_FRAME)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._socket = path
        tmp = self.address.address_file.with_suffix(".tmp")
        tmp.write_text(f"{path}\n")
        os.replace(tmp, self.address.address_file)
        return server

    def _unpublish(self) -> None:
        for p in (self.address.address_file, self.address.token_file, self._socket):
            if p is not None:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    # -- warm sessions -------------------------------------------------------------------

    @staticmethod
    def _plain_open(client: _Client, msg: dict[str, Any]) -> bool:
        """An open a spare can answer: the default policy, no run, episode, image or lab
        (what `bastion run` asks for), by a client that may open run-less sessions."""
        return (client.run_id is None and msg.get("policy") is None
                and not msg.get("run_id") and not msg.get("episode_id")
                and not msg.get("image") and not msg.get("lab"))

    def _refill(self) -> None:
        self._spares = [t for t in self._spares if not t.done() or not t.cancelled()]
        while len(self._spares) < self.warm:
            self._spares.append(asyncio.get_running_loop().create_task(self._make_spare()))

    async def _make_spare(self) -> Any:
        from ..aio import AsyncSession

        factory = self._session_factory or _default_session
        return AsyncSession.wrap(await self._blocking(
            factory, None, run_id="", episode_id="", state_dir=self.state.root, lab=False))

    def _take_spare(self) -> Any | None:
        """A ready spare session (and another one started in its place), else None."""
        for task in self._spares:
            if task.done() and not task.cancelled():
                self._spares.remove(task)
                self._refill()
                if task.exception() is not None:
                    log.warning("bastion node: a warm session failed: %s", task.exception())
                    return None
                session = task.result()
                if session.ended or session.closed:  # ended while it waited: not handed out
                    task = asyncio.get_running_loop().create_task(session.close())
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
                    return None
                self.spares_used += 1
                return session
        return None

    async def _close_spares(self) -> None:
        spares, self._spares = self._spares, []
        for task in spares:
            if not task.done():
                with contextlib.suppress(BaseException):
                    await task  # a launch in flight: let it finish, then close it
        await asyncio.gather(*(t.result().close() for t in spares
                               if not t.cancelled() and t.exception() is None),
                             return_exceptions=True)

    async def _close_all(self) -> None:
        sessions = [s for c in list(self._clients) for s in c.sessions.values()]
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    # -- one connection ----------------------------------------------------------------

    async def _serve_client(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        client: _Client | None = None
        write_lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()

        async def send(obj: dict[str, Any]) -> None:
            async with write_lock:
                writer.write(encode_frame(obj))
                await writer.drain()

        try:
            client = await self._hello(reader, send)
            if client is None:
                return
            self._clients.add(client)
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await send({"id": None, "ok": False, "error": error_to_wire(
                        ProtocolError(f"frame over {MAX_FRAME} bytes"))})
                    return
                if not line:
                    return
                try:
                    msg: dict[str, Any] | ProtocolError = decode_frame(line)
                except ProtocolError as exc:
                    msg = exc
                task = asyncio.create_task(self._answer(client, msg, send))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                rid = msg.get("id") if isinstance(msg, dict) else None
                if isinstance(rid, (int, str)):
                    client.inflight[rid] = task
                    task.add_done_callback(lambda _t, r=rid: client.inflight.pop(r, None))
        except (ConnectionError, OSError):
            return
        except Exception:  # a bug: this connection ends, the daemon and the others go on
            log.exception("bastion node: a connection failed")
            return
        finally:
            for task in tasks:
                task.cancel()
            if client is not None:
                self._clients.discard(client)
                # the trainer went away: nothing it started keeps running
                await asyncio.gather(*(s.close() for s in client.sessions.values()),
                                     return_exceptions=True)
            with contextlib.suppress(Exception):
                writer.close()

    async def _hello(self, reader: asyncio.StreamReader,
                     send: Callable[[dict[str, Any]], Any]) -> _Client | None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            msg = decode_frame(line) if line else {}
        except (TimeoutError, ValueError, asyncio.LimitOverrunError, ProtocolError):
            msg = {}
        rid = msg.get("id")
        if msg.get("op") != "hello":
            await send({"id": rid, "ok": False, "error": error_to_wire(
                ProtocolError("the first request must be hello"))})
            return None
        if msg.get("version") != PROTOCOL_VERSION:
            await send({"id": rid, "ok": False, "error": error_to_wire(ProtocolError(
                f"protocol version {msg.get('version')!r} not served "
                f"(this node speaks {PROTOCOL_VERSION})"))})
            return None
        token = msg.get("token")
        client: _Client | None = None
        if isinstance(token, str) and token:
            if hmac.compare_digest(token, self._admin_token):
                client = _Client(run_id=None)
            else:
                run = next((r for t, r in self._run_tokens.items()
                            if hmac.compare_digest(token, t)), None)
                if run is not None:
                    client = _Client(run_id=run)
        if client is None:
            log.warning("bastion node: refused a client without a valid token")
            await send({"id": rid, "ok": False, "error": error_to_wire(
                NotAuthorized("not authenticated: bad or missing token"))})
            return None
        await send({"id": rid, "ok": True, "version": PROTOCOL_VERSION,
                    "run_id": client.run_id})
        return client

    async def _answer(self, client: _Client, msg: dict[str, Any] | ProtocolError,
                      send: Callable[[dict[str, Any]], Any]) -> None:
        rid: Any = None
        try:
            if isinstance(msg, ProtocolError):
                raise msg
            rid = msg.get("id")
            op = msg.get("op")
            handler = _OPS.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ProtocolError(f"unknown op {op!r}")
            answer = await handler(self, client, msg, rid)
            await send({"id": rid, "ok": True, **answer})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is answered, none kills the daemon
            if not isinstance(exc, BastionError):
                log.exception("bastion node: request %r failed", rid)
            await send({"id": rid, "ok": False, "error": error_to_wire(exc)})

    async def _blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def _session(self, client: _Client, msg: dict[str, Any]) -> Any:
        sid = msg.get("session")
        session = client.sessions.get(sid) if isinstance(sid, str) else None
        if session is None:
            raise SessionClosed(f"no open session {sid!r} on this connection")
        return session

    # -- operations --------------------------------------------------------------------

    async def _op_ping(self, client: _Client, msg: dict[str, Any], rid: Any) -> dict[str, Any]:
        return {"sessions": sum(len(c.sessions) for c in self._clients), "pid": os.getpid(),
                "checked": self.checked, "warm_used": self.spares_used}

    async def _op_run_token(self, client: _Client, msg: dict[str, Any],
                            rid: Any) -> dict[str, Any]:
        if client.run_id is not None:
            raise NotAuthorized("only the node's admin token mints run tokens")
        run_id = msg.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise ProtocolError("run_token needs a run_id")
        token = secrets.token_urlsafe(32)
        self._run_tokens[token] = run_id
        return {"token": token}

    async def _op_open(self, client: _Client, msg: dict[str, Any], rid: Any) -> dict[str, Any]:
        from ..policy import Policy

        run_id = msg.get("run_id") or ""
        if client.run_id is not None:
            if run_id and run_id != client.run_id:
                raise NotAuthorized(f"this token opens sessions of run {client.run_id!r} only")
            run_id = client.run_id
        if sum(len(c.sessions) for c in self._clients) >= self.max_sessions:
            raise SandboxUnavailable(f"this node runs its maximum of {self.max_sessions} "
                                     "sessions; close some or start it with --max-sessions")
        text = msg.get("policy")
        policy = (Policy.from_yaml(text, source=str(msg.get("policy_source") or "<client>"))
                  if isinstance(text, str) else None)
        kwargs: dict[str, Any] = {"run_id": run_id, "episode_id": msg.get("episode_id") or "",
                                  "state_dir": self.state.root,
                                  "lab": bool(msg.get("lab", False))}
        if msg.get("image"):
            kwargs["image"] = str(msg["image"])
        factory = self._session_factory or _default_session
        from ..aio import AsyncSession

        session = self._take_spare() if self._plain_open(client, msg) else None
        if session is None:
            session = AsyncSession.wrap(await self._blocking(factory, policy, **kwargs))
        client.sessions[session.session_id] = session
        return {"session": session.session_id, "run_id": session.run_id,
                "episode_id": session.episode_id, "policy_hash": session.session.policy.hash,
                "policy_name": session.session.policy.name}

    async def _op_exec(self, client: _Client, msg: dict[str, Any], rid: Any) -> dict[str, Any]:
        session = self._session(client, msg)
        cmd = msg.get("cmd")
        if not (isinstance(cmd, str) or (isinstance(cmd, list)
                                         and all(isinstance(a, str) for a in cmd))):
            raise ProtocolError("exec needs cmd: a string or a list of strings")
        stdin = unb64(msg["stdin_b64"]) if msg.get("stdin_b64") is not None else None
        env = msg.get("env")
        # on the loop: the supervisor's socket and the call's pipes are watched here, no
        # thread waits on a call (cancelling this task kills the call: see _op_cancel)
        result = await session.exec(cmd, step=msg.get("step"), call_id=msg.get("call_id"),
                                    timeout=msg.get("timeout"), stdin=stdin,
                                    env=dict(env) if isinstance(env, dict) else None,
                                    cwd=msg.get("cwd"))
        return {"result": result.to_dict()}

    async def _op_write_file(self, client: _Client, msg: dict[str, Any],
                             rid: Any) -> dict[str, Any]:
        session = self._session(client, msg)
        result = await session.write_file(str(msg.get("path")), unb64(msg.get("content_b64")),
                                          step=msg.get("step"), call_id=msg.get("call_id"))
        return {"result": result.to_dict()}

    async def _op_read_file(self, client: _Client, msg: dict[str, Any],
                            rid: Any) -> dict[str, Any]:
        """The file's bytes, exactly (exec's stdout is text): read through a call in the
        sandbox, so it is observed, attributed and judged like ``cat``."""
        session = self._session(client, msg)
        path = str(msg.get("path"))
        result = await session.exec(["base64", "-w0", "--", path], step=msg.get("step"),
                                    call_id=msg.get("call_id"))
        out = result.to_dict()
        data = b""
        if result.ok:
            data = unb64(result.stdout.strip())
            out["stdout"] = ""
        return {"result": out, "content_b64": b64(data)}

    async def _op_trust(self, client: _Client, msg: dict[str, Any],
                        rid: Any) -> dict[str, Any]:
        """The harness declares a program it wrote into this session's sandbox
        (``Session.trust_executable``): that path with that digest only."""
        session = self._session(client, msg)
        path, digest = msg.get("path"), msg.get("sha256")
        if not isinstance(path, str) or not isinstance(digest, str):
            raise ProtocolError("trust needs path and sha256 strings")
        try:
            await session.trust_executable(path, digest)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        return {"trusted": True}

    async def _op_cancel(self, client: _Client, msg: dict[str, Any],
                         rid: Any) -> dict[str, Any]:
        """The client gave up on a pending request (its await was cancelled): cancel
        it here too. A cancelled exec kills every process of its call (its cgroup) and
        records the call's end before this answers."""
        task = client.inflight.get(msg.get("request"))
        if task is None or task.done():
            return {"cancelled": False}
        task.cancel()
        await asyncio.wait([task], timeout=30)
        return {"cancelled": True}

    async def _op_verdicts(self, client: _Client, msg: dict[str, Any],
                           rid: Any) -> dict[str, Any]:
        """Every verdict of the session from index ``since`` (late ones included: a
        background process killed after its call ended), waiting up to ``wait`` s for
        one when there is none yet."""
        session = self._session(client, msg)
        since = int(msg.get("since") or 0)
        deadline = asyncio.get_running_loop().time() + min(float(msg.get("wait") or 0), 60.0)
        while len(session.verdicts) <= since and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        verdicts = list(session.verdicts[since:])
        return {"verdicts": [v.to_dict() for v in verdicts], "next": since + len(verdicts),
                "ended": session.ended}

    async def _op_check(self, client: _Client, msg: dict[str, Any], rid: Any) -> dict[str, Any]:
        """`bastion check` with the policy's packs compiled once per policy text."""
        text = msg.get("input")
        if not isinstance(text, str):
            raise ProtocolError("check needs input: the text bastion check reads")
        policy_text = msg.get("policy")
        return await self._blocking(self._check, text, policy_text if isinstance(
            policy_text, str) else None, str(msg.get("policy_source") or "<client>"),
            bool(msg.get("json")))

    def _check(self, text: str, policy_text: str | None, source: str,
               as_json: bool) -> dict[str, Any]:
        import io

        from ..checking import run_check
        from ..errors import PolicyError

        policy, ruleset = self._checker(policy_text, source)
        out = io.StringIO()
        try:
            counts = run_check(io.StringIO(text), out, policy, as_json=as_json,
                               ruleset=ruleset)
        except PolicyError as exc:  # a bad input line: what came before it is kept
            return {"output": out.getvalue(), "counts": None, "error": error_to_wire(exc)}
        self.checked += 1
        return {"output": out.getvalue(), "counts": counts}

    def _checker(self, policy_text: str | None, source: str) -> tuple[Any, Any]:
        from ..policy import Policy
        from ..rules import load_ruleset

        key = policy_text or ""
        with self._checkers_lock:
            hit = self._checkers.get(key)
        if hit is None:
            policy = (Policy.from_yaml(policy_text, source=source) if policy_text is not None
                      else Policy.default())
            hit = (policy, load_ruleset(policy))
            with self._checkers_lock:
                if len(self._checkers) >= 16:
                    self._checkers.pop(next(iter(self._checkers)))
                self._checkers[key] = hit
        return hit

    async def _op_close(self, client: _Client, msg: dict[str, Any], rid: Any) -> dict[str, Any]:
        session = client.sessions.pop(str(msg.get("session")), None)
        if session is not None:
            await session.close()
            return {"closed": True, "ended": session.ended}
        return {"closed": False, "ended": None}


def _default_session(policy: Any, **kwargs: Any) -> Any:
    from ..session import Session

    return Session(policy, **kwargs)


_OPS: dict[str, Callable[..., Any]] = {
    "ping": NodeServer._op_ping,
    "run_token": NodeServer._op_run_token,
    "open": NodeServer._op_open,
    "exec": NodeServer._op_exec,
    "write_file": NodeServer._op_write_file,
    "read_file": NodeServer._op_read_file,
    "cancel": NodeServer._op_cancel,
    "trust": NodeServer._op_trust,
    "verdicts": NodeServer._op_verdicts,
    "close": NodeServer._op_close,
    "check": NodeServer._op_check,
}
