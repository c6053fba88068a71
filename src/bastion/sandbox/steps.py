"""One code path for a tool call, driven either by a blocking caller or by asyncio.

A tool call waits on a few things: the supervisor's socket and the call's pipes
(readiness), the session's pipeline and the audit trail (short blocking steps), the
sandbox's lock. The call itself (``Sandbox.call_steps``, ``Session``'s exec path) is a
generator that *yields* what it waits for, as one of three small requests, and gets
the answer sent back:

    Ready(read, write, timeout)  -> the set of fds that became ready (empty: timed out)
    Blocking(fn)                 -> fn()'s result (its exception is thrown back in)
    Acquire(lock)                -> None, once the lock is held

``drive`` answers them by blocking (``Session.exec``); ``bastion.aio`` answers them
from a running event loop, with the fds registered on the loop and ``Blocking`` steps
run on the session's own executor thread (``AsyncSession.exec``). Policy, analysis,
attribution, the pipeline and the audit trail are therefore the same code for both:
only the waiting differs.

Cancellation (asyncio only): the driver throws ``CallCancelled`` into the steps at a
``Ready``/``Acquire`` they wait on, or at the next request after a ``Blocking`` step
that was already running; the steps kill what they started, record it, and finish.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Acquire", "Blocking", "CallCancelled", "Ready", "Request", "Steps", "drive"]

T = TypeVar("T")


class CallCancelled(Exception):  # a signal, like asyncio.CancelledError
    """The caller stopped waiting for the call (its asyncio task was cancelled)."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Wait until an fd of ``read`` is readable or one of ``write`` writable, for at
    most ``timeout`` seconds. Answer: the fds that are ready."""

    read: tuple[int, ...] = ()
    write: tuple[int, ...] = ()
    timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class Blocking:
    """A short step that may block (a pipeline round trip, the audit flush, command
    analysis): run in place by ``drive``, off the event loop by ``bastion.aio``."""

    fn: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Acquire:
    """Take ``lock`` (a sandbox runs one call at a time)."""

    lock: threading.Lock


Request = Ready | Blocking | Acquire
Steps = Generator[Request, Any, T]


def ready(request: Ready) -> set[int]:
    """Answer a ``Ready`` by blocking in poll(2) (any fd number, unlike select)."""
    poller = select.poll()
    for fd in request.read:
        poller.register(fd, select.POLLIN)
    for fd in request.write:
        poller.register(fd, select.POLLOUT)
    try:
        return {fd for fd, _ in poller.poll(max(0.0, request.timeout) * 1000)}
    except InterruptedError:
        return set()


def drive(steps: Steps[T]) -> T:
    """Run ``steps`` to the end in this thread, blocking on each request."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(request, Ready):
                value = ready(request)
            elif isinstance(request, Blocking):
                value = request.fn()
            elif isinstance(request, Acquire):
                request.lock.acquire()
            else:  # pragma: no cover - a bug in the steps
                raise TypeError(f"unknown request {request!r}")
        except BaseException as exc:  # noqa: BLE001 - thrown back where it was asked for
            error = exc
