"""The process sensor: exec, fork and exit of every session process, as they happen.

One sensor per host serves every session (``host.add_observer``). It listens to the
kernel's process connector, which reports every fork/exec/exit on the host with host
pids and a monotonic timestamp, keeps a table of the pids that belong to sessions,
and turns the events of those pids into ``Event``s enriched from /proc.

Attribution: a process is charged to a session and a tool call by its call cgroup
(``<session>/call-N``), which the kernel keeps across fork, double fork and setsid,
and which is read on every exec (a pid may have been recycled since the table saw
it). Only processes inside a call cgroup are the agent's: bastion's own processes in
the session (the bwrap launcher chain, the in-sandbox supervisor, in ``init``) are
tracked for ancestry but never reported, so a launch line is never judged as the
agent's. When /proc is already gone, the pid table (filled from fork events: a child
inherits its parent's call) still attributes the event, which is then recorded with
``proc.partial = true``. Ancestry comes from the same table.

Argv: /proc is read after the exec, so a process that exits at once, execs again or
rewrites its argv shows nothing or something else by then. Each exec's argv as it was
asked for is recorded by the exec listener while the exec waits
(``sandbox/execnotify.py``); an exec event takes the latest record of its pid received
before the event's kernel time, and says where its argv came from
(``proc.argv_source``: ``exec``, ``procfs``, ``none``). When /proc still shows the image
but another argv, both are judged (two events, the second ``procfs``): the record is
read from the caller's memory, which another of its threads could change in between.

The sensor only reads and submits: it holds each session's read-only view and event
sink, and the session's own executor evaluates and responds, so the netlink thread
is never held up by a slow response in one session.

Fail closed (``guard``): if the kernel drops messages (ENOBUFS: the socket buffer
overflowed), every session is sent a ``telemetry`` event with ``telemetry.loss`` (the
engine answers with a freezing verdict). Falling more than ``max_lag`` behind the
kernel loses nothing -- every event is still judged, late -- so it is reported as a
degraded sensor (``telemetry.gap``, recorded, no penalty), at most every few seconds:
under a rollout burst on a small host a lagging sensor is load, not the agent, and
freezing honest episodes for it is a false penalty. An agent that floods the connector
to blind bastion overruns the buffer and is frozen. If the connector cannot be used at all the sensor polls
the session cgroups instead, and says so: every event carries ``proc.source = poll``
and each session gets a ``telemetry.gap`` event.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
import threading
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from ..contracts import CallRef, EventSink, SessionState, Watched
from ..errors import InternalError
from ..events import Event, EventKind
from ..sandbox import execnotify
from . import netlink
from .guard import Observed, report_degraded, report_loss, run_guarded, telemetry
from .identity import ProgramIdentity, family
from .procfs import ProcInfo, process_name, read_process, read_stat
from .pyshadow import shadowed_modules
from .wait import wait_readable

__all__ = ["ProcessSensor", "launched"]

_DEFAULT_RCVBUF = 16 * 1024 * 1024
_MAX_ANCESTRY = 32
_BATCH = 64  # messages taken per wake-up
_MAX_EXITED = 4096  # exited processes remembered for a late exec event of their pid
_LAG_REPORT_INTERVAL = 5.0  # seconds between two 'fell behind' reports


class _Proc:
    """What the sensor remembers of one session process."""

    __slots__ = ("born_ns", "call", "cmdline", "image", "name", "ppid", "read_ns", "session")

    def __init__(self, session: Observed, call: CallRef | None, ppid: int | None, name: str,
                 cmdline: str) -> None:
        self.session = session
        self.call = call
        self.ppid = ppid
        self.name = name
        self.cmdline = cmdline
        self.read_ns = 0  # when /proc was read for the last exec
        self.image: tuple[str, tuple[str, ...]] | None = None  # (exe, argv) it showed
        self.born_ns = 0  # the fork's kernel time, when seen: older exec records are not its


_LIVE: weakref.WeakSet[ProcessSensor] = weakref.WeakSet()


def launched(pid: int) -> tuple[str, tuple[str, ...]] | None:
    """(exe, argv) of the exec session process ``pid`` last made, or the process it
    was forked from: what it was started as, whatever it calls itself since (a
    process that rewrote its title, ``$0 = "make"``, ``process.title``)."""
    for sensor in list(_LIVE):
        entry = sensor._table.get(pid)
        if entry is not None and entry.image is not None:
            return entry.image
    return None


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
        self._sessions: dict[str, Observed] = {}
        self._table: dict[int, _Proc] = {}
        self._identity = ProgramIdentity()  # renamed copies of system programs
        # the latest exited processes, oldest first: an exec from a non-leader thread
        # comes after its old leader's exit event (see _handle)
        self._exited: dict[int, _Proc] = {}
        self._max_lag_ns = int(max_lag * 1e9)
        self._poll_interval = poll_interval
        self._stop = threading.Event()
        self._broken: str | None = None
        self._sock = None
        self.gap_reason: str | None = None
        self.losses = 0
        self.lagged = 0
        self._lag_reported = 0.0  # monotonic time of the last degraded report
        self.events = 0
        self._exec_gap = execnotify.available()
        _LIVE.add(self)
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
        self._thread = threading.Thread(target=run_guarded, args=(
            "process", target, self._watched, self._set_broken),
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

    def register(self, view: Watched, sink: EventSink) -> None:
        if self._broken:
            raise InternalError(f"the process sensor has failed: {self._broken}")
        observed = Observed(view, sink)
        cgroup = view.cgroup
        with self._lock:
            self._sessions[view.session_id] = observed
            if cgroup is not None:
                for pid in cgroup.pids():
                    info = read_process(pid)
                    call = view.call_for_cgroup(info.cgroup) if info.cgroup else None
                    self._table[pid] = _Proc(observed, call, info.ppid, info.name, info.cmdline)
        if self.gap_reason:
            sink.submit(telemetry(view, "process", self.gap_reason, gap=True))
        if self._exec_gap:
            sink.submit(telemetry(view, "process", f"{self._exec_gap}: the argv of a process "
                                  "that exits or execs again before /proc is read is lost",
                                  gap=True))

    def unregister(self, view: Watched) -> None:
        with self._lock:
            self._sessions.pop(view.session_id, None)
            for pid in [p for p, e in self._table.items() if e.session.view is view]:
                del self._table[pid]
            for pid in [p for p, e in self._exited.items() if e.session.view is view]:
                del self._exited[pid]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()

    @property
    def broken(self) -> str | None:
        return self._broken

    # -- threads ----------------------------------------------------------------------------

    def _watched(self) -> list[Observed]:
        with self._lock:
            return list(self._sessions.values())

    def _set_broken(self, reason: str) -> None:
        self._broken = reason

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
                self.losses += 1
                report_loss("process", "netlink receive buffer overrun (ENOBUFS): process "
                            "events were dropped by the kernel", self._watched())
                self._resync()
            elif lag > self._max_lag_ns:
                self.lagged += 1
                now = time.monotonic()
                if now - self._lag_reported >= _LAG_REPORT_INTERVAL:
                    self._lag_reported = now
                    report_degraded("process", f"the process sensor fell {lag / 1e6:.0f} ms "
                                    "behind the kernel (no events lost)", self._watched())

    def _run_poll(self) -> None:
        # pid -> (session, call, comm): a changed comm is how an exec shows when polling
        known: dict[int, tuple[Observed, CallRef, str]] = {}
        while not self._stop.wait(self._poll_interval):
            seen: set[int] = set()
            for observed in self._watched():
                cgroup = observed.view.cgroup
                if cgroup is None:
                    continue
                for path in _call_dirs(cgroup.unified):
                    call = observed.view.call_for_cgroup(str(path))
                    if call is None:
                        continue  # bastion's own processes (init), or not a call yet
                    for pid in _procs(path):
                        stat = read_stat(pid)
                        if stat is None:
                            continue
                        seen.add(pid)
                        before = known.get(pid)
                        if before is None or before[2] != stat.comm:
                            known[pid] = (observed, call, stat.comm)
                            with self._lock:
                                self._poll_exec(observed, call, pid)
            for pid in [p for p in known if p not in seen]:
                observed, call, _comm = known.pop(pid)
                with self._lock:
                    entry = self._table.pop(pid, None)
                    self._emit(observed, call, EventKind.EXIT, pid,
                               entry.ppid if entry else None, time.monotonic_ns(), {
                                   "proc.name": entry.name if entry else "",
                                   "proc.source": "poll"})

    # -- event handling (called with self._lock held) ----------------------------------------

    def _handle(self, ev: netlink.ProcEvent) -> None:
        what = ev.what
        if what == netlink.FORK:
            if ev.pid != ev.tgid:
                return  # a new thread, not a process
            # a new process under this pid: what was recorded for the pid before now is an
            # older one's (lookups from this entry start at born_ns; the records are left
            # for other sensors reading the same table, which may lag behind this one)
            self._exited.pop(ev.tgid, None)
            parent = self._table.get(ev.ptgid)
            if parent is None:
                # a new process outside every session (bastion's launcher among them):
                # whatever the table held under this pid is a process that is gone
                self._table.pop(ev.tgid, None)
                return
            child = self._table[ev.tgid] = _Proc(parent.session, parent.call, ev.ptgid,
                                                 parent.name, parent.cmdline)
            child.born_ns = ev.ts
            child.image = parent.image  # what it runs until it execs (runcode.py reads it)
            if parent.call is not None:
                self._emit(parent.session, parent.call, EventKind.FORK, ev.tgid, ev.ptgid,
                           ev.ts, {"proc.name": parent.name, "proc.cmdline": parent.cmdline,
                                   "proc.pname": parent.name, "proc.pcmdline": parent.cmdline,
                                   "proc.source": "netlink"})
        elif what == netlink.EXEC:
            entry = self._table.get(ev.tgid)
            if entry is None:
                # an exec from a non-leader thread reports the old leader's exit first
                # (de_thread), then the exec under the same pid: the same process
                entry = self._exited.pop(ev.tgid, None)
                if entry is None:
                    return
                self._table[ev.tgid] = entry
            read_ns = time.monotonic_ns()
            info = read_process(ev.tgid)
            # read after /proc: the record of a later exec that /proc may already show
            # is in the table by then (it is recorded before that exec may proceed)
            record, later = execnotify.notifier().lookup(ev.tgid, ev.ts, entry.born_ns)
            now_info = info
            if record is not None:
                info, argv_source, now_args = _exec_time(info, record, later)
            elif (ev.ts <= entry.read_ns and not info.partial
                    and entry.image == (info.exe, info.args)):
                # /proc is read after the kernel reports an exec; when a process execs
                # twice in quick succession (bash -c exec'ing its command) the read for
                # the first exec already showed the second image: reported, skip it
                return
            else:
                argv_source, now_args = ("none" if info.partial else "procfs"), None
            entry.read_ns = read_ns
            entry.image = (info.exe, info.args)
            self._exec(entry, info, ev.tgid, ev.ts, "netlink", argv_source, now_args)
            if now_args is not None:
                # judged as /proc shows it too: the exec-time argv is read from the
                # caller's memory while it waits, and another thread of the caller can
                # change it before the kernel copies it (what runs is then what /proc
                # shows); a program that rewrote its own argv is judged twice, harmlessly
                self._exec(entry, now_info, ev.tgid, ev.ts, "netlink", "procfs", None)
        elif what == netlink.EXIT:
            if ev.pid != ev.tgid:
                return
            entry = self._table.pop(ev.tgid, None)
            if entry is not None:
                self._exited[ev.tgid] = entry
                while len(self._exited) > _MAX_EXITED:
                    del self._exited[next(iter(self._exited))]
            if entry is None or entry.call is None:
                return
            status = ev.exit_code
            fields: dict[str, Any] = {
                "proc.name": entry.name, "proc.cmdline": entry.cmdline,
                "proc.exit_code": (status >> 8) & 0xFF if status & 0x7F == 0 else 128 + (status & 0x7F),
                "proc.exit_signal": status & 0x7F, "proc.source": "netlink"}
            self._emit(entry.session, entry.call, EventKind.EXIT, ev.tgid, entry.ppid, ev.ts,
                       fields)

    def _exec(self, entry: _Proc, info: ProcInfo, pid: int, ts: int, source: str,
              argv_source: str | None = None, now_args: tuple[str, ...] | None = None) -> None:
        view = entry.session.view
        if info.cgroup is not None:
            # read on every exec: the pid may belong to a new process by now, and only a
            # process in one of this session's call cgroups is the agent's
            call = view.call_for_cgroup(info.cgroup)
        else:  # gone before its cgroup could be read: what the table knows
            call = entry.call or view.call_by_host_pid(pid)
        entry.call = call
        entry.name = info.name  # empty when /proc was gone: the parent's name would lie
        entry.cmdline = info.cmdline
        if call is None:
            return  # bastion's own (launcher, supervisor), or not in this session at all
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
            "proc.argv_source": argv_source or ("none" if info.partial else "procfs"),
        }
        copy_of = self._identity.copy_of(pid, info.exe)
        if copy_of is not None:
            # a byte-identical copy of a system program: judged as that program, named
            # however its file is (`cp $(command -v bash) .cache/rt`)
            fields["proc.copy_of"] = copy_of
            if family(copy_of) != family(info.name):
                fields["proc.renamed"] = True
                fields["proc.name"] = copy_of
        if now_args is not None:
            # the process rewrote its argv after exec (or another thread changed it while
            # the exec waited): both are recorded, the exec-time one is judged
            fields["proc.args_now"] = list(now_args)
        if info.uid is not None:
            fields["proc.uid"] = info.uid
        shadows = shadowed_modules(pid, fields["proc.name"], info.exe, list(info.args), info.cwd)
        if shadows:  # a test framework the agent's files stand in for (pyshadow.py)
            fields["proc.shadows"] = shadows
        self._emit(entry.session, call, EventKind.EXEC, pid, entry.ppid, ts, fields)

    def _poll_exec(self, observed: Observed, call: CallRef, pid: int) -> None:
        info = read_process(pid)
        entry = _Proc(observed, call, info.ppid, info.name, info.cmdline)
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

    def _emit(self, observed: Observed, call: CallRef, kind: EventKind, pid: int,
              ppid: int | None, ts: int, fields: dict[str, Any]) -> None:
        view = observed.view
        if view.state is SessionState.CLOSED:
            return  # closing: the session's record is being finalised
        ancestry, names = self._ancestry(ppid)
        fields["proc.anames"] = names
        event = Event(kind=kind, session_id=view.session_id, run_id=view.run_id,
                      episode_id=view.episode_id, step=call.step, call_id=call.call_id,
                      pid=pid, ppid=ppid, ancestry=ancestry, fields=fields, ts=ts)
        self.events += 1
        observed.sink.submit(event)  # the session's executor evaluates and responds

    # -- fail closed ---------------------------------------------------------------------------

    def _resync(self) -> None:
        """After lost messages the table is stale both ways: pids forked meanwhile are
        unknown (add them), and pids whose exit was lost may be reused by host
        processes (drop every pid no session cgroup holds)."""
        with self._lock:
            alive: set[int] = set()
            for observed in self._sessions.values():
                cgroup = observed.view.cgroup
                if cgroup is None or observed.view.state is SessionState.CLOSED:
                    continue
                for pid in cgroup.pids():
                    alive.add(pid)
                    if pid not in self._table:
                        info = read_process(pid)
                        call = (observed.view.call_for_cgroup(info.cgroup) if info.cgroup
                                else None)
                        self._table[pid] = _Proc(observed, call, info.ppid, info.name,
                                                 info.cmdline)
            for pid in [p for p in self._table if p not in alive]:
                del self._table[pid]


def _exec_time(info: ProcInfo, record: execnotify.ExecRecord,
               later: bool) -> tuple[ProcInfo, str, tuple[str, ...] | None]:
    """The exec as the kernel was asked for it (``record``), completed from /proc
    (``info``) where /proc still shows this image. Returns the info to report, where
    its argv came from, and the argv /proc shows now if that differs (rewritten)."""
    exec_comm = record.filename.rsplit("/", 1)[-1][:15]  # what exec sets comm to
    if not info.partial and not later:
        # /proc shows this image: everything from it but the argv and the name, which
        # the program may have changed since (setproctitle, prctl, or to hide); proc.comm
        # stays what /proc shows now (a comm changed to imitate a kernel thread is news)
        name = process_name(exec_comm or info.comm, info.exe, record.argv)
        if info.args == record.argv:
            return replace(info, name=name), "exec", None
        return replace(info, args=record.argv, name=name), "exec", info.args
    # gone, partial, or already showing a later exec: only the record is this exec's
    exe = record.filename
    return (ProcInfo(info.pid, info.ppid, process_name(exec_comm, exe, record.argv), exe,
                     record.argv, info.cwd, info.uid, exec_comm, info.cgroup, False),
            "exec", None)


def _call_dirs(unified: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [unified, *(p for p in unified.iterdir() if p.is_dir())]
    return []


def _procs(path: Path) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    return []
