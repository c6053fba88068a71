"""One serial executor per session: everything after an event is produced runs here.

Sensors (the netlink thread, the file and resource threads) and the gateway (its
asyncio loop) only *submit*: recording, evaluation, planning and carrying out the
response all happen on the session's own thread, in submission order. So one slow
action (a quarantine copying a workspace) delays only its own session, never the
sensor that serves every session, and the audit trail of a session is written by one
thread in one order.

``call`` runs a function on the executor and waits for it; from the executor's own
thread it runs inline (a response that ends the session records its lifecycle event
in the same pass, not after a deadlock).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .errors import SessionClosed

__all__ = ["SerialExecutor"]

T = TypeVar("T")
_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class SerialExecutor:
    """A thread and a queue; work items run one at a time, in order."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def on_thread(self) -> bool:
        """True when called from the executor's own thread."""
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)``; never blocks. After ``close`` the future fails with
        ``SessionClosed``."""
        future: Future[T] = Future()
        with self._lock:
            if not self._closed:
                self._queue.put((future, fn, args))
                return future
        future.set_exception(SessionClosed("the session is closed"))
        return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the executor and return its result (inline when
        already there)."""
        if self.on_thread():
            return fn(*args)
        return self.submit(fn, *args).result()

    def close(self) -> None:
        """Run what is queued, then stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if not self.on_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)
            else:
                future.set_result(result)
