"""What the sessions of one bastion process share on this host.

One ``Host`` per state directory: the detected cgroup layout, the pool of sandbox
uids, and the host-wide observers (process sensor, resource sampler, gateway) that
serve every session. Sessions register on creation and unregister on close; an
observer learns about a session only through ``register``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from pathlib import Path

from .contracts import CallRef, EventSink, SessionObserver, Watched
from .sandbox import CgroupHost, check_prerequisites
from .sandbox.cleanup import cgroup_prefix
from .sensors import FileSensor, HostSensors, ProcessSensor, ResourceSensor
from .state import StateDir

__all__ = ["Host", "SessionObserver"]

log = logging.getLogger("bastion")

# Sandboxed processes run as one of these host uids, one per session, never a uid
# that owns anything on the host.
_UID_BASE = 2_000_000
_UID_SPAN = 1_000_000


def _become_subreaper() -> None:
    """Orphans of a killed sandbox (its pid-1 bwrap) are re-parented to us rather than
    to the host's init, so the sandbox can reap them at once and leave no zombie."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


_sensors: HostSensors | None = None
_sensors_lock = threading.Lock()


def _process_sensors() -> HostSensors:
    """The sensors of this process, shared by every Host (every state directory).

    The kernel's process connector reports every fork and exec on the machine to every
    listening socket, so one socket and one set of sensor threads per process is the
    cost to pay, however many state directories the process uses.
    """
    global _sensors
    with _sensors_lock:
        if _sensors is None or _sensors.closed:
            _sensors = HostSensors(ProcessSensor(), ResourceSensor(), FileSensor())
        return _sensors


class Host:
    _instances: dict[Path, Host] = {}
    _lock = threading.Lock()

    def __init__(self, state: StateDir) -> None:
        _become_subreaper()
        self.state = state
        # one cgroup root per state directory: `bastion cleanup` of one never sees another's
        self.cgroups = CgroupHost.detect(cgroup_prefix(state.root))
        missing = self.cgroups.unenforced()
        if missing:
            # say it once, loudly: a policy limit that is not enforced must not look enforced
            log.warning("bastion: this host cannot enforce the %s limit(s) (cgroup mode %s); "
                        "sessions will run without them", ", ".join(missing), self.cgroups.mode)
        self._uids = itertools.count((os.getpid() * 997) % _UID_SPAN)
        self._observers: list[SessionObserver] = []
        self._sessions: dict[str, Watched] = {}
        self._slock = threading.Lock()
        self.sensors: HostSensors | None = _process_sensors()
        for observer in self.sensors.observers:
            self.add_observer(observer)

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

    def remove_observer(self, observer: SessionObserver) -> None:
        self._observers.remove(observer)

    def register(self, view: Watched, sink: EventSink) -> None:
        """Tell every observer about a new session; if one refuses, undo the others
        (a session is either fully observed or not created)."""
        with self._slock:
            self._sessions[view.session_id] = view
        done: list[SessionObserver] = []
        try:
            for observer in self._observers:
                observer.register(view, sink)
                done.append(observer)
        except BaseException:
            for observer in reversed(done):
                with contextlib.suppress(Exception):
                    observer.unregister(view)
            with self._slock:
                self._sessions.pop(view.session_id, None)
            raise

    def call_ended(self, view: Watched, call: CallRef | None) -> None:
        """A call of ``view`` ended: observers that take a look then (the file
        sensor's setuid sweep) do so now, before the call's verdicts are settled."""
        for observer in list(self._observers):
            hook = getattr(observer, "call_ended", None)
            if hook is not None:
                hook(view, call)

    def unregister(self, view: Watched) -> None:
        for observer in reversed(self._observers):
            observer.unregister(view)
        with self._slock:
            self._sessions.pop(view.session_id, None)

    def sessions(self) -> list[Watched]:
        with self._slock:
            return list(self._sessions.values())

    def unenforced_limits(self) -> list[str]:
        return self.cgroups.unenforced()
