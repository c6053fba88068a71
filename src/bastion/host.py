"""What the sessions of one bastion process share on this host.

One ``Host`` per state directory: the detected cgroup layout, the pool of sandbox
uids, and the host-wide observers (process sensor, resource sampler, gateway) that
serve every session. Sessions register on creation and unregister on close; an
observer learns about a session only through ``register``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .sandbox import CgroupHost, check_prerequisites
from .state import StateDir

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Host", "SessionObserver"]

log = logging.getLogger("bastion")

# Sandboxed processes run as one of these host uids, one per session, never a uid
# that owns anything on the host.
_UID_BASE = 2_000_000
_UID_SPAN = 1_000_000


class SessionObserver(Protocol):
    """A host-wide part that follows every session (sensor, gateway, sampler)."""

    def register(self, session: Session) -> None: ...

    def unregister(self, session: Session) -> None: ...


def _become_subreaper() -> None:
    """Orphans of a killed sandbox (its pid-1 bwrap) are re-parented to us rather than
    to the host's init, so the sandbox can reap them at once and leave no zombie."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


class Host:
    _instances: dict[Path, Host] = {}
    _lock = threading.Lock()

    def __init__(self, state: StateDir) -> None:
        _become_subreaper()
        self.state = state
        self.cgroups = CgroupHost.detect()
        missing = self.cgroups.unenforced()
        if missing:
            # say it once, loudly: a policy limit that is not enforced must not look enforced
            log.warning("bastion: this host cannot enforce the %s limit(s) (cgroup mode %s); "
                        "sessions will run without them", ", ".join(missing), self.cgroups.mode)
        self._uids = itertools.count((os.getpid() * 997) % _UID_SPAN)
        self._observers: list[SessionObserver] = []
        self._sessions: dict[str, Session] = {}
        self._slock = threading.Lock()

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str] | None = None) -> Host:
        check_prerequisites()  # before touching anything, so the error is the real cause
        state = StateDir.resolve(state_dir)
        with cls._lock:
            host = cls._instances.get(state.root)
            if host is None:
                host = cls._instances[state.root] = cls(state)
            return host

    def allocate_uid(self) -> int:
        return _UID_BASE + next(self._uids) % _UID_SPAN

    def add_observer(self, observer: SessionObserver) -> None:
        self._observers.append(observer)

    def register(self, session: Session) -> None:
        with self._slock:
            self._sessions[session.session_id] = session
        for observer in self._observers:
            observer.register(session)

    def unregister(self, session: Session) -> None:
        for observer in reversed(self._observers):
            observer.unregister(session)
        with self._slock:
            self._sessions.pop(session.session_id, None)

    def sessions(self) -> list[Session]:
        with self._slock:
            return list(self._sessions.values())

    def unenforced_limits(self) -> list[str]:
        return self.cgroups.unenforced()
