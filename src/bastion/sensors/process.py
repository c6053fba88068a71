"""The process sensor: exec, fork and exit of every session process, as they happen.

One sensor per host serves every session (``host.add_observer``). It listens to the
kernel's process connector, which reports every fork/exec/exit on the host with host
pids and a monotonic timestamp, keeps a table of the pids that belong to sessions,
and turns the events of those pids into ``Event``s enriched from /proc.

Attribution: a process is charged to a session by its cgroup and to a tool call by
its call cgroup (``<session>/call-N``), which the kernel keeps across fork, double
fork and setsid. When /proc is already gone, the pid table (filled from fork events:
a child inherits its parent's session and call) still attributes the event, which is
then recorded with ``proc.partial = true``. Ancestry comes from the same table.

Fail closed: if the kernel drops messages (ENOBUFS: the socket buffer overflowed) or
the sensor falls more than ``max_lag`` behind the kernel, every session is sent a
``telemetry`` event with ``telemetry.loss`` (the engine answers with a freezing
verdict) and is frozen here too if it is not already. If the connector cannot be
used at all the sensor polls the session cgroups instead, and says so: every event
carries ``proc.source = poll`` and each session gets a ``telemetry.gap`` event.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BastionError, InternalError
from ..events import Event, EventKind
from . import netlink
from .procfs import ProcInfo, read_process, read_stat
from .wait import wait_readable

if TYPE_CHECKING:
    from ..session import Session, _Call

__all__ = ["ProcessSensor"]

_DEFAULT_RCVBUF = 16 * 1024 * 1024
_MAX_ANCESTRY = 32
_BATCH = 64  # messages taken per wake-up


class _Proc:
    """What the sensor remembers of one session process."""

    __slots__ = ("call", "cmdline", "image", "name", "ppid", "read_ns", "session")

    def __init__(self, session: Session, call: _Call | None, ppid: int | None, name: str,
                 cmdline: str) -> None:
        self.session = session
        self.call = call
        self.ppid = ppid
        self.name = name
        self.cmdline = cmdline
        self.read_ns = 0  # when /proc was read for the last exec
        self.image: tuple[str, tuple[str, ...]] | None = None  # (exe, argv) it showed


def session_id_of(cgroup: str) -> str | None:
    """``/bastion/<sid>/call-3`` -> ``<sid>`` (also ``.../init`` and the session root)."""
    parts = cgroup.rstrip("/").split("/")
    if len(parts) >= 2 and (parts[-1].startswith("call-") or parts[-1] == "init"):
        return parts[-2]
    return parts[-1] if parts else None


class ProcessSensor:
    """Host-wide observer; ``mode`` is ``auto`` (netlink, else polling), ``netlink``
    (fail if unavailable) or ``poll``."""

    def __init__(
        self,
        *,
        mode: Literal["auto", "netlink", "poll"] = "auto",
        rcvbuf: int = _DEFAULT_RCVBUF,
        max_lag: float = 2.0,
        poll_interval: float = 0.05,
    ) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._table: dict[int, _Proc] = {}
        self._max_lag_ns = int(max_lag * 1e9)
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._broken: str | None = None
        self._sock = None
        self.gap_reason: str | None = None
        self.losses = 0
        self.events = 0
        if mode != "poll":
            try:
                self._sock = netlink.open_connector(rcvbuf)
                self._self_test()
            except OSError as exc:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                if mode == "netlink":
                    raise InternalError(f"process connector unavailable: {exc}") from exc
                self.gap_reason = (f"process connector unavailable ({exc}); polling every "
                                   f"{poll_interval * 1000:.0f} ms: shorter-lived processes "
                                   "may be missed")
        else:
            self.gap_reason = (f"polling every {poll_interval * 1000:.0f} ms by configuration: "
                               "shorter-lived processes may be missed")
        self.mode = "netlink" if self._sock is not None else "poll"
        target = self._run_netlink if self._sock is not None else self._run_poll
        self._thread = threading.Thread(target=self._guard, args=(target,),
                                        name=f"bastion-proc-{self.mode}", daemon=True)
        self._thread.start()

    def _self_test(self) -> None:
        """The connector may be compiled out while the socket still opens: make sure
        events for a child of ours actually arrive."""
        assert self._sock is not None
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        deadline = time.monotonic() + 2.0
        buf = bytearray(8192)
        while time.monotonic() < deadline:
            ready = wait_readable(self._sock, max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                n = self._sock.recv_into(buf)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    return  # so many events arrive that some were dropped: it works
                raise
            if any(ev.tgid == child.pid for ev in netlink.parse(memoryview(buf)[:n])):
                return
        raise OSError(errno.ENOSYS, "no process events arrived for a test child")

    # -- observer protocol ----------------------------------------------------------------

    def register(self, session: Session) -> None:
        if self._broken:
            raise InternalError(f"the process sensor has failed: {self._broken}")
        cgroup = session.sandbox.cgroup if session.sandbox is not None else None
        with self._lock:
            self._sessions[session.session_id] = session
            if cgroup is not None:
                for pid in cgroup.pids():
                    info = read_process(pid)
                    call = session.call_for_cgroup(info.cgroup) if info.cgroup else None
                    self._table[pid] = _Proc(session, call, info.ppid, info.name, info.cmdline)
        if self.gap_reason:
            session.ingest(session.event(EventKind.TELEMETRY, **{
                "telemetry.sensor": "process", "telemetry.reason": self.gap_reason,
                "telemetry.gap": True}))

    def unregister(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.session_id, None)
            for pid in [p for p, e in self._table.items() if e.session is session]:
                del self._table[pid]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()

    @property
    def broken(self) -> str | None:
        return self._broken

    def tracked(self, session: Session) -> list[int]:
        with self._lock:
            return [p for p, e in self._table.items() if e.session is session]

    # -- threads ----------------------------------------------------------------------------

    def _guard(self, target: Callable[[], None]) -> None:
        """A sensor that dies must not leave sessions running unobserved."""
        try:
            target()
        except BaseException as exc:
            self._broken = f"{type(exc).__name__}: {exc}"
            with self._lock:
                sessions = list(self._sessions.values())
            for session in sessions:
                with contextlib.suppress(Exception):
                    session.terminate(f"the process sensor failed ({self._broken})")
            if not isinstance(exc, Exception):
                raise

    def _run_netlink(self) -> None:
        assert self._sock is not None
        sock = self._sock
        buf = bytearray(65536)
        view = memoryview(buf)
        while not self._stop.is_set():
            ready = wait_readable(sock, 0.2)
            if not ready:
                continue
            # one message per event: take what is queued (bounded) in one go, so a
            # burst costs one wake-up and one lock round trip, not one per process
            events: list[netlink.ProcEvent] = []
            overrun = False
            for _ in range(_BATCH):
                try:
                    n = sock.recv_into(buf, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    overrun = True
                    break
                events.extend(netlink.parse(view[:n]))
            lag = 0
            if events:
                with self._lock:
                    if self._sessions:
                        lag = time.monotonic_ns() - events[0].ts
                        for ev in events:
                            self._handle(ev)
            if overrun:
                self._loss("netlink receive buffer overrun (ENOBUFS): process events "
                           "were dropped by the kernel", dropped=True)
            elif lag > self._max_lag_ns:
                self._loss(f"the process sensor fell {lag / 1e6:.0f} ms behind the kernel",
                           dropped=False)

    def _run_poll(self) -> None:
        # pid -> (session, call, comm): a changed comm is how an exec shows when polling
        known: dict[int, tuple[Session, _Call | None, str]] = {}
        while not self._stop.wait(self._poll_interval):
            with self._lock:
                sessions = list(self._sessions.values())
            seen: set[int] = set()
            for session in sessions:
                cgroup = session.sandbox.cgroup if session.sandbox is not None else None
                if cgroup is None:
                    continue
                for path in _call_dirs(cgroup.unified):
                    call = session.call_for_cgroup(str(path))
                    for pid in _procs(path):
                        stat = read_stat(pid)
                        if stat is None:
                            continue
                        seen.add(pid)
                        before = known.get(pid)
                        if before is None or before[2] != stat.comm:
                            known[pid] = (session, call, stat.comm)
                            with self._lock:
                                self._poll_exec(session, call, pid)
            for pid in [p for p in known if p not in seen]:
                session, call, _comm = known.pop(pid)
                with self._lock:
                    entry = self._table.pop(pid, None)
                    self._emit(session, call, EventKind.EXIT, pid,
                               entry.ppid if entry else None, time.monotonic_ns(), {
                                   "proc.name": entry.name if entry else "",
                                   "proc.source": "poll"})

    # -- event handling (called with self._lock held) ----------------------------------------

    def _handle(self, ev: netlink.ProcEvent) -> None:
        what = ev.what
        if what == netlink.FORK:
            if ev.pid != ev.tgid:
                return  # a new thread, not a process
            parent = self._table.get(ev.ptgid)
            if parent is None:
                return
            self._table[ev.tgid] = _Proc(parent.session, parent.call, ev.ptgid, parent.name,
                                         parent.cmdline)
            self._emit(parent.session, parent.call, EventKind.FORK, ev.tgid, ev.ptgid, ev.ts, {
                "proc.name": parent.name, "proc.cmdline": parent.cmdline,
                "proc.pname": parent.name, "proc.pcmdline": parent.cmdline,
                "proc.source": "netlink"})
        elif what == netlink.EXEC:
            entry = self._table.get(ev.tgid)
            if entry is None:
                return
            # a process inside a call cannot leave its cgroup: only a process not yet
            # known to be in a call (the call's first one) needs its cgroup read
            read_ns = time.monotonic_ns()
            info = read_process(ev.tgid, cgroup=entry.call is None)
            if (ev.ts <= entry.read_ns and not info.partial
                    and entry.image == (info.exe, info.args)):
                # /proc is read after the kernel reports an exec; when a process execs
                # twice in quick succession (bash -c exec'ing its command) the read for
                # the first exec already showed the second image: reported, skip it
                return
            entry.read_ns = read_ns
            entry.image = (info.exe, info.args)
            self._exec(entry, info, ev.tgid, ev.ts, "netlink")
        elif what == netlink.EXIT:
            if ev.pid != ev.tgid:
                return
            entry = self._table.pop(ev.tgid, None)
            if entry is None:
                return
            status = ev.exit_code
            fields: dict[str, Any] = {
                "proc.name": entry.name, "proc.cmdline": entry.cmdline,
                "proc.exit_code": (status >> 8) & 0xFF if status & 0x7F == 0 else 128 + (status & 0x7F),
                "proc.exit_signal": status & 0x7F, "proc.source": "netlink"}
            self._emit(entry.session, entry.call, EventKind.EXIT, ev.tgid, entry.ppid, ev.ts,
                       fields)

    def _exec(self, entry: _Proc, info: ProcInfo, pid: int, ts: int, source: str) -> None:
        session = entry.session
        call = entry.call
        if info.cgroup is not None:
            if not session.owns_cgroup(info.cgroup):
                return
            call = session.call_for_cgroup(info.cgroup) or call
        elif call is None:
            call = _call_by_host_pid(session, pid)
        entry.call = call
        entry.name = info.name  # empty when /proc was gone: the parent's name would lie
        entry.cmdline = info.cmdline
        parent = self._table.get(entry.ppid) if entry.ppid else None
        fields: dict[str, Any] = {
            "proc.name": info.name,
            "proc.exe": info.exe,
            "proc.args": list(info.args),
            "proc.cmdline": info.cmdline,
            "proc.cwd": info.cwd,
            "proc.comm": info.comm,
            "proc.pname": parent.name if parent else "",
            "proc.pcmdline": parent.cmdline if parent else "",
            "proc.partial": info.partial,
            "proc.source": source,
        }
        if info.uid is not None:
            fields["proc.uid"] = info.uid
        self._emit(session, call, EventKind.EXEC, pid, entry.ppid, ts, fields)

    def _poll_exec(self, session: Session, call: _Call | None, pid: int) -> None:
        info = read_process(pid)
        entry = _Proc(session, call, info.ppid, info.name, info.cmdline)
        self._table[pid] = entry
        self._exec(entry, info, pid, time.monotonic_ns(), "poll")

    def _ancestry(self, ppid: int | None) -> tuple[tuple[int, ...], list[str]]:
        pids: list[int] = []
        names: list[str] = []
        while ppid and len(pids) < _MAX_ANCESTRY:
            pids.append(ppid)
            entry = self._table.get(ppid)
            if entry is None:
                break
            names.append(entry.name)
            ppid = entry.ppid
        return tuple(pids), names

    def _emit(self, session: Session, call: _Call | None, kind: EventKind, pid: int,
              ppid: int | None, ts: int, fields: dict[str, Any]) -> None:
        ancestry, names = self._ancestry(ppid)
        fields["proc.anames"] = names
        event = Event(kind=kind, session_id=session.session_id, run_id=session.run_id,
                      episode_id=session.episode_id,
                      step=call.step if call is not None else None,
                      call_id=call.call_id if call is not None else None,
                      pid=pid, ppid=ppid, ancestry=ancestry, fields=fields, ts=ts)
        if session.closed:
            return  # closing: the session's record is being finalised
        self.events += 1
        try:
            session.ingest(event)
        except Exception:  # noqa: BLE001 - ingest terminated that session already
            if not session.ended:
                session.terminate("the process sensor could not deliver an event")

    # -- fail closed ---------------------------------------------------------------------------

    def _loss(self, reason: str, *, dropped: bool) -> None:
        """Freeze every session not already stopped; after dropped messages, also
        bring the pid table back in line with the cgroups."""
        self.losses += 1
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            if session.closed or session.ended or session.frozen:
                continue
            with contextlib.suppress(Exception):  # a failing ingest ends the session itself
                session.ingest(session.event(EventKind.TELEMETRY, **{
                    "telemetry.sensor": "process", "telemetry.reason": reason,
                    "telemetry.loss": True}))
            if not (session.frozen or session.ended or session.closed):
                try:
                    session.freeze()
                except BastionError:
                    session.terminate(f"events were lost and the session could not be frozen: "
                                      f"{reason}")
        if dropped:
            self._resync(sessions)

    def _resync(self, sessions: list[Session]) -> None:
        """After lost messages the table is stale both ways: pids forked meanwhile are
        unknown (add them), and pids whose exit was lost may be reused by host
        processes (drop every pid no session cgroup holds)."""
        with self._lock:
            alive: set[int] = set()
            for session in sessions:
                cgroup = session.sandbox.cgroup if session.sandbox is not None else None
                if cgroup is None or session.closed:
                    continue
                for pid in cgroup.pids():
                    alive.add(pid)
                    if pid not in self._table:
                        info = read_process(pid)
                        call = session.call_for_cgroup(info.cgroup) if info.cgroup else None
                        self._table[pid] = _Proc(session, call, info.ppid, info.name,
                                                 info.cmdline)
            for pid in [p for p in self._table if p not in alive]:
                del self._table[pid]


def _call_by_host_pid(session: Session, pid: int) -> _Call | None:
    for call in session.calls.values():
        if call.host_pid == pid:
            return call
    return None


def _call_dirs(unified: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [unified, *(p for p in unified.iterdir() if p.is_dir())]
    return []


def _procs(path: Path) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    return []
