"""Watching each sandbox's supervisor from the host.

The supervisor runs under the agent's uid (a user namespace maps one uid), so the
agent can always signal it: ``kill -STOP 2`` or ``kill -9 2``. That cannot be
prevented, so it is noticed: a stopped, killed or unresponsive supervisor means the
session can no longer be run or watched as promised, and it ends, fail-closed, with a
``monitor_tamper`` verdict (the session's part; see ``Sandbox(on_lost=...)``).

One thread watches every sandbox of the process: it polls each supervisor's pidfd (a
death is seen at once) and reads its state from ``/proc/<pid>/stat`` every
``PERIOD`` seconds (a stop is seen within that). ``Sandbox.run`` checks the same
things itself while a call runs, so a call never waits on a supervisor that is gone.

The same uid can also reach the supervisor without a signal: ``prlimit --pid 2``
(take its file descriptors or processes away), ``renice``/``taskset`` (starve it). Its
resource limits, nice value and CPU affinity are taken when the watch starts and
compared every ``FINGERPRINT_EVERY`` looks; a change is tampering like a stop.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable

from ..errors import SessionBroken

__all__ = ["PERIOD", "SupervisorLost", "SupervisorWatch", "supervisor_problem", "watcher"]

PERIOD = 0.2  # seconds between two looks at every supervisor's state
FINGERPRINT_EVERY = 5  # looks between two reads of its limits, nice value and affinity


class SupervisorLost(SessionBroken):
    """The sandbox's supervisor was stopped, killed or stopped answering: the agent
    (or something on the host) tampered with bastion's part of the sandbox."""


def _state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, D, T, t, Z, X), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    tail = stat.rsplit(b")", 1)[-1].split()
    return tail[0].decode() if tail else None


def fingerprint(pid: int) -> tuple[bytes, bytes, bytes] | None:
    """What the agent could change about the supervisor without stopping it: resource
    limits, nice value, CPU affinity. None if it is gone."""
    try:
        with open(f"/proc/{pid}/limits", "rb") as f:
            limits = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            tail = f.read().rsplit(b")", 1)[-1].split()
        with open(f"/proc/{pid}/status", "rb") as f:
            affinity = next((line for line in f if line.startswith(b"Cpus_allowed_list")), b"")
    except OSError:
        return None
    return limits, tail[16] if len(tail) > 16 else b"", affinity


def tampered(pid: int, baseline: tuple[bytes, bytes, bytes] | None) -> str | None:
    """Why the supervisor's limits, priority or affinity no longer match ``baseline``."""
    if baseline is None:
        return None
    now = fingerprint(pid)
    if now is None:
        return None  # gone: supervisor_problem says so
    for what, before, after in zip(("resource limits", "nice value", "CPU affinity"),
                                   baseline, now):
        if before != after:
            return f"the sandbox's supervisor's {what} were changed (prlimit/renice/taskset)"
    return None


def supervisor_problem(pid: int, pidfd: int) -> str | None:
    """Why this supervisor cannot serve the session any more, or None if it can."""
    ready = select.poll()
    ready.register(pidfd, select.POLLIN)
    if ready.poll(0):
        return "the sandbox's supervisor was killed"
    state = _state(pid)
    if state is None or state in ("Z", "X"):
        return "the sandbox's supervisor was killed"
    if state in ("T", "t"):
        return "the sandbox's supervisor was stopped (SIGSTOP or a tracer)"
    return None


class SupervisorWatch:
    """One thread for every supervisor of the process."""

    def __init__(self, period: float = PERIOD) -> None:
        self._period = period
        self._lock = threading.Lock()
        # pidfd -> (pid, callback)
        self._watched: dict[int, tuple[int, Callable[[str], None]]] = {}
        self._baselines: dict[int, tuple[bytes, bytes, bytes] | None] = {}
        self._looks = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="bastion-supervisor-watch",
                                        daemon=True)
        self._thread.start()

    def add(self, pid: int, pidfd: int, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(reason)`` once, from the watch thread, if the supervisor is
        stopped or dies before ``remove``."""
        baseline = fingerprint(pid)
        with self._lock:
            self._watched[pidfd] = (pid, on_lost)
            self._baselines[pidfd] = baseline
        os.write(self._wake_w, b"x")

    def problem(self, pid: int, pidfd: int) -> str | None:
        """Now, on the caller's thread: why this supervisor cannot serve (gone,
        stopped, or its limits, priority or affinity changed since ``add``), or None.
        One that is no longer watched (lost, or removed) is a problem too."""
        with self._lock:
            if pidfd not in self._watched:
                return "the sandbox's supervisor is no longer watched"
            baseline = self._baselines.get(pidfd)
        return supervisor_problem(pid, pidfd) or tampered(pid, baseline)

    def remove(self, pidfd: int) -> None:
        with self._lock:
            self._watched.pop(pidfd, None)
            self._baselines.pop(pidfd, None)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            with self._lock:
                watched = dict(self._watched)
            for pidfd in watched:
                poller.register(pidfd, select.POLLIN)
            with contextlib.suppress(InterruptedError):
                poller.poll(self._period * 1000)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
            self._looks += 1
            deep = self._looks % FINGERPRINT_EVERY == 0
            for pidfd, (pid, on_lost) in watched.items():
                with self._lock:
                    if self._watched.get(pidfd) != (pid, on_lost):
                        continue  # removed meanwhile (a normal close)
                    problem = supervisor_problem(pid, pidfd)
                    if problem is None and deep:
                        problem = tampered(pid, self._baselines.get(pidfd))
                    if problem is None:
                        continue
                    del self._watched[pidfd]
                    self._baselines.pop(pidfd, None)
                # the callback ends the session; it must not raise, but if it does the
                # watch thread must survive for the other sessions (the callback's
                # owner has killed its sandbox before anything that can fail)
                with contextlib.suppress(Exception):
                    on_lost(problem)


_watcher: SupervisorWatch | None = None
_watcher_lock = threading.Lock()


def watcher() -> SupervisorWatch:
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            _watcher = SupervisorWatch()
        return _watcher
