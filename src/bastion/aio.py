"""``AsyncSession``: the session API for an asyncio trainer (``await session.exec``).

A trainer drives hundreds of rollouts from one event loop (verl's AgentLoop, SkyRL,
verifiers, Inspect's ``await sandbox().exec``). Calling the blocking ``Session.exec``
through ``asyncio.to_thread`` costs a thread per call in flight and the loop's latency
under load. Here a tool call is the *same* steps as ``Session.exec`` (policy, command
analysis, the pipeline, the audit trail, attribution: ``sandbox/steps.py``), answered
from the running loop:

- the supervisor's socket and the call's pipes are registered with the loop
  (``add_reader``/``add_writer``): no thread waits on a call;
- the short blocking steps (the pipeline's verdict on the command, the audit flush
  before the command may run, command analysis) run on the session's own serial
  executor thread, which exists anyway; the loop awaits their futures;
- creating and closing a session (bubblewrap launch, teardown) run on a small shared
  thread pool.

Cancelling an ``await session.exec(...)`` (``task.cancel()``, ``asyncio.timeout``)
kills every process of the call (its cgroup), records the call's end with
``reason: cancelled by the caller`` in the trail, and then raises ``CancelledError``.
A call's timeout kills its process group, as in the blocking API; verdicts arrive in
``ExecResult.verdicts`` exactly as there.

One call runs at a time per session (as with ``Session``); concurrency comes from
many sessions on one loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self, TypeVar

from .events import Verdict
from .policy import Policy
from .results import ExecResult
from .sandbox.steps import Acquire, Blocking, CallCancelled, Ready, Request, Steps
from .session import Session

__all__ = ["AsyncSession", "drive_async"]

T = TypeVar("T")

_ACQUIRE_POLL = 0.005  # seconds between two tries of a lock a blocking caller holds

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _lifecycle_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that create and close sessions: as many as sandboxes may launch at
    once (``sandbox._LAUNCHES``), so a rollout burst queues here, not in bwrap."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(4, 2 * (os.cpu_count() or 1)),
                thread_name_prefix="bastion-aio-lifecycle")
        return _pool


class _Waiter:
    """One request of the steps, answered on the loop: an asyncio future plus how to
    stop waiting early (a cancelled caller)."""

    __slots__ = ("_cleanup", "future")

    def __init__(self, future: asyncio.Future[Any], cleanup: Callable[[], None]) -> None:
        self.future = future
        self._cleanup = cleanup

    def abort(self) -> None:
        """Stop waiting; whatever the request took (a lock) is given back."""
        self._cleanup()
        if not self.future.done():
            self.future.cancel()


class _Watched:
    """The fds one call has registered with the loop. They stay registered from one
    ``Ready`` to the next (a call's wait loop asks for the same fds every 50 ms), and
    are brought in line with each new request *before* anything else runs on the
    loop: an fd the steps closed or handed on is unregistered in the same turn."""

    __slots__ = ("_fired", "_future", "_loop", "_read", "_write")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._read: frozenset[int] = frozenset()
        self._write: frozenset[int] = frozenset()
        self._fired: set[int] = set()
        self._future: asyncio.Future[set[int]] | None = None

    def _on_ready(self, fd: int) -> None:
        self._fired.add(fd)
        future = self._future
        if future is not None and not future.done():
            future.set_result(self._fired)

    def sync(self, read: tuple[int, ...] = (), write: tuple[int, ...] = ()) -> None:
        """Register exactly ``read`` and ``write``."""
        loop, want_r, want_w = self._loop, frozenset(read), frozenset(write)
        for fd in self._read - want_r:
            loop.remove_reader(fd)
        for fd in self._write - want_w:
            loop.remove_writer(fd)
        # recorded first: an fd that fails to register is still removed later
        added_r, added_w = want_r - self._read, want_w - self._write
        self._read, self._write = want_r, want_w
        for fd in added_r:
            loop.add_reader(fd, self._on_ready, fd)
        for fd in added_w:
            loop.add_writer(fd, self._on_ready, fd)

    def wait(self, request: Ready) -> _Waiter:
        self.sync(request.read, request.write)
        future: asyncio.Future[set[int]] = self._loop.create_future()
        self._fired = set()
        self._future = future

        def on_timeout() -> None:
            if not future.done():
                future.set_result(self._fired)

        timer = self._loop.call_later(max(0.0, request.timeout), on_timeout)
        future.add_done_callback(lambda _: timer.cancel())
        return _Waiter(future, on_timeout)


def _acquire(loop: asyncio.AbstractEventLoop, request: Acquire) -> _Waiter:
    """Take a threading lock without blocking the loop: try, then retry on a timer
    (it is only ever held by a blocking caller of the same session)."""
    future: asyncio.Future[None] = loop.create_future()
    timer: asyncio.TimerHandle | None = None
    stopped = False

    def attempt() -> None:
        nonlocal timer
        if stopped or future.done():
            return
        if request.lock.acquire(blocking=False):
            future.set_result(None)
        else:
            timer = loop.call_later(_ACQUIRE_POLL, attempt)

    def cleanup() -> None:
        nonlocal stopped
        stopped = True
        if timer is not None:
            timer.cancel()
        if future.done() and not future.cancelled():
            request.lock.release()  # taken, but the steps will not run with it

    attempt()
    return _Waiter(future, cleanup)


class _Next:
    """What a chain of blocking steps ended on: the steps' next request that is not
    ``Blocking`` (or a ``Blocking`` one, when the caller cancelled meanwhile), their
    return value, or the exception they raised."""

    __slots__ = ("done", "raised", "request", "value")

    def __init__(self, *, request: Request | None = None, done: bool = False,
                 value: Any = None, raised: BaseException | None = None) -> None:
        self.request, self.done, self.value, self.raised = request, done, value, raised


class _Chain:
    """A ``Blocking`` step, then the steps themselves, on the session's executor thread,
    up to their next request that is not ``Blocking``.

    A call's blocking steps often follow one another (analysis, then the pipeline's
    verdict on the command; the result, then the audit): answering each on the loop
    would cost a round trip between the loop and the executor thread per step, two
    thread wake-ups under a contended GIL. Steps are plain generators that ``drive``
    runs on any thread, so running them here is the same code; the loop takes over
    again at the next readiness wait or lock. Once the caller cancelled
    (``stop``), the chain ends at the next ``Blocking`` request without running it, so
    ``CallCancelled`` is thrown in exactly where the loop would have thrown it."""

    __slots__ = ("_steps", "stop")

    def __init__(self, steps: Steps[Any]) -> None:
        self._steps = steps
        self.stop = False

    def run(self, request: Blocking) -> _Next:
        while True:
            try:
                try:
                    value = request.fn()
                except BaseException as exc:  # noqa: BLE001 - thrown back into the steps
                    nxt = self._steps.throw(exc)
                else:
                    nxt = self._steps.send(value)
            except StopIteration as stop:
                return _Next(done=True, value=stop.value)
            except BaseException as exc:  # noqa: BLE001 - the steps raised: the loop re-raises
                return _Next(raised=exc)
            if not isinstance(nxt, Blocking) or self.stop:
                return _Next(request=nxt)
            request = nxt


def _blocking(offload: Callable[[Callable[[], Any]], concurrent.futures.Future[Any]],
              chain: _Chain, request: Blocking) -> _Waiter:
    future = asyncio.wrap_future(offload(lambda: chain.run(request)))
    return _Waiter(future, lambda: None)


async def drive_async(steps: Steps[T],
                      offload: Callable[[Callable[[], Any]], concurrent.futures.Future[Any]]
                      ) -> T:
    """Run ``steps`` (see ``sandbox/steps.py``) on the running loop; ``Blocking``
    requests go to ``offload`` (the session's executor). The counterpart of
    ``steps.drive``.

    If the awaiting task is cancelled, ``CallCancelled`` is thrown into the steps once:
    at once while they wait on readiness or a lock, after the running blocking step
    otherwise (a pipeline step is never abandoned half-way). The steps then kill and
    record the call and run to their end, shielded; ``CancelledError`` is raised
    after."""
    loop = asyncio.get_running_loop()
    watched = _Watched(loop)
    try:
        return await _drive(steps, offload, loop, watched)
    finally:
        watched.sync()  # nothing of this call stays registered


async def _drive(steps: Steps[T],
                 offload: Callable[[Callable[[], Any]], concurrent.futures.Future[Any]],
                 loop: asyncio.AbstractEventLoop, watched: _Watched) -> T:
    value: Any = None
    error: BaseException | None = None
    cancelled = False  # the awaiting task was cancelled
    told = False  # ... and the steps were told
    chain = _Chain(steps)
    chained: _Next | None = None  # where a chain of blocking steps left the steps
    while True:
        if chained is not None and chained.done:  # the steps returned during the chain
            if cancelled:
                raise asyncio.CancelledError()
            return chained.value  # type: ignore[no-any-return]
        try:
            if chained is not None and chained.raised is not None:
                raise chained.raised  # the steps raised during the chain
            if chained is not None and chained.request is not None:
                request: Request = chained.request
            else:
                request = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            if cancelled:
                raise asyncio.CancelledError() from None
            return stop.value  # type: ignore[no-any-return]
        except CallCancelled:
            raise asyncio.CancelledError() from None
        value, error, chained = None, None, None
        if not isinstance(request, Ready):
            watched.sync()  # the steps moved on from their fds (and may have closed them)
        if cancelled and not told:
            told = True
            error = CallCancelled("the caller cancelled the call")
            continue
        try:
            if isinstance(request, Ready):
                waiter = watched.wait(request)
            elif isinstance(request, Blocking):
                waiter = _blocking(offload, chain, request)
            elif isinstance(request, Acquire):
                waiter = _acquire(loop, request)
            else:  # pragma: no cover - a bug in the steps
                raise TypeError(f"unknown request {request!r}")
        except BaseException as exc:  # noqa: BLE001 - thrown back into the steps
            error = exc
            continue
        blocking = isinstance(request, Blocking)
        while True:
            try:
                # A blocking step's future is shielded: a cancelled caller must not lose
                # where the chain left the steps. Readiness and lock futures are awaited
                # as they are (one loop hop fewer per wait): only a cancelled caller
                # cancels them, and abort() below handles a result that came first. Once
                # the steps were told, they are cleaning up: a second cancel must not
                # cancel what they wait for, so everything is shielded from then on.
                shielded = blocking or told
                value = await (asyncio.shield(waiter.future) if shielded
                               else waiter.future)
                if blocking:
                    chained, value = value, None  # the chain ran the steps on from there
                break
            except asyncio.CancelledError:
                if blocking and waiter.future.cancelled():  # the request itself failed
                    error = CallCancelled("the request was cancelled")
                    break
                cancelled = True
                chain.stop = True
                if not told and not blocking:
                    waiter.abort()
                    told = True
                    error = CallCancelled("the caller cancelled the call")
                    break
                # a blocking step runs to its end; the steps hear of it at the next request
            except BaseException as exc:  # noqa: BLE001 - thrown back into the steps
                error = exc
                break


class AsyncSession:
    """An isolated, observed sandbox for one episode, for an asyncio caller.

    >>> async with AsyncSession(run_id="r1", episode_id="e1") as s:
    ...     r = await s.exec("echo hi", step=0)

    The constructor takes ``Session``'s arguments and creates nothing; ``async with``
    or ``await s.start()`` (or ``await AsyncSession.create(...)``) creates the sandbox
    on a small thread pool. ``AsyncSession.wrap(session)`` drives an existing
    ``Session``. ``session`` is the blocking ``Session`` underneath (its ``verdicts``,
    ``events``, ``ended``, ...), the same object the pipeline acts on.
    """

    def __init__(self, policy: Policy | str | os.PathLike[str] | None = None,
                 **kwargs: Any) -> None:
        self._args = (policy, kwargs)
        self._session: Session | None = None
        self._lock: asyncio.Lock | None = None

    @classmethod
    def wrap(cls, session: Session) -> AsyncSession:
        """An ``AsyncSession`` over a session created elsewhere (e.g. by a factory)."""
        self = cls.__new__(cls)
        self._args = (None, {})
        self._session = session
        self._lock = None
        return self

    @classmethod
    async def create(cls, policy: Policy | str | os.PathLike[str] | None = None,
                     **kwargs: Any) -> AsyncSession:
        """Create the session (sandbox launch off the loop) and return it."""
        self = cls(policy, **kwargs)
        await self.start()
        return self

    async def start(self) -> Self:
        """Create the sandbox, off the loop. Idempotent."""
        if self._session is None:
            policy, kwargs = self._args
            loop = asyncio.get_running_loop()
            self._session = await loop.run_in_executor(
                _lifecycle_pool(), lambda: Session(policy, **kwargs))
        return self

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the session is not started: await start() or use async with")
        return self._session

    # -- attribution and state (the blocking session's) ---------------------------------

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def run_id(self) -> str:
        return self.session.run_id

    @property
    def episode_id(self) -> str:
        return self.session.episode_id

    @property
    def verdicts(self) -> list[Verdict]:
        return self.session.verdicts

    @property
    def ended(self) -> str | None:
        return self.session.ended

    @property
    def closed(self) -> bool:
        return self._session is not None and self._session.closed

    # -- tool calls ---------------------------------------------------------------------

    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        step: int | None = None,
        call_id: str | None = None,
        timeout: float | None = None,
        stdin: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        """``Session.exec``, awaited: same arguments, same result and verdicts."""
        s = self.session
        return await self._run(lambda: s._exec_steps(cmd, step=step, call_id=call_id,
                                                      timeout=timeout, stdin=stdin, env=env,
                                                      cwd=cwd))

    async def write_file(self, path: str, content: str | bytes, *, step: int | None = None,
                         call_id: str | None = None) -> ExecResult:
        """``Session.write_file``, awaited."""
        s = self.session
        return await self._run(lambda: s._write_steps(path, content, step=step,
                                                       call_id=call_id))

    async def read_file(self, path: str, *, step: int | None = None,
                        call_id: str | None = None) -> ExecResult:
        """``Session.read_file``, awaited."""
        return await self.exec(["cat", "--", path], step=step, call_id=call_id)

    async def _run(self, make: Callable[[], Steps[ExecResult]]) -> ExecResult:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one call at a time per session, in order
            s = self.session
            return await drive_async(make(), s._executor.submit)

    async def settle(self) -> None:
        """``Session.settle``, awaited: everything submitted so far has been through
        the pipeline."""
        s = self.session
        await drive_async(_one(Blocking(s.settle)), s._executor.submit)

    async def trust_executable(self, path: str, sha256: str) -> None:
        """``Session.trust_executable``, awaited (its record goes through the pipeline on
        the session's executor, off the loop)."""
        s = self.session
        await drive_async(_one(Blocking(lambda: s.trust_executable(path, sha256))),
                          s._executor.submit)

    def terminate(self, reason: str) -> None:
        """End the episode now (kill everything, refuse further calls)."""
        self.session.terminate(reason)

    async def close(self) -> None:
        """Kill every process, remove the sandbox, end the episode in the trail. Off
        the loop. Idempotent."""
        if self._session is None or self._session.closed:
            return
        loop = asyncio.get_running_loop()
        await asyncio.shield(loop.run_in_executor(_lifecycle_pool(), self._session.close))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        inner = repr(self._session) if self._session is not None else "not started"
        return f"<AsyncSession {inner}>"


def _one(request: Request) -> Steps[Any]:
    return (yield request)
