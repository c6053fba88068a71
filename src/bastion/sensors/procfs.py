"""Reading one process from /proc, tolerating that it may vanish at any moment.

A process can exit between the kernel telling us about it and us reading /proc;
``read_process`` then returns what it could read with ``partial=True`` rather than
nothing, so the event is still recorded (and still attributed through the pid table
the process sensor keeps from fork events).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["ProcInfo", "ProcStat", "process_name", "read_cgroup", "read_endpoints",
           "read_process", "read_sched", "read_sched_ns", "read_stat", "read_tcp_established"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str, size: int = 65536) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    ppid: int | None
    name: str
    exe: str
    args: tuple[str, ...]
    cwd: str
    uid: int | None
    comm: str
    cgroup: str | None  # v2 path, e.g. /bastion/<session>/call-3
    partial: bool

    @property
    def cmdline(self) -> str:
        return " ".join(self.args)


_MULTICALL = frozenset({"busybox", "toybox"})


def process_name(comm: str, exe: str, args: tuple[str, ...] | list[str]) -> str:
    """The name rules match as ``proc.name``, as Falco defines it: the kernel's comm,
    which exec sets to the basename of the path that was executed (``python3``,
    ``nc``, ``miner.sh``; not the symlink target ``python3.11`` or ``nc.openbsd``),
    extended past comm's 15-character limit when the basename of argv[0] or of the
    executable starts with it."""
    if exe and args and exe.rsplit("/", 1)[-1] in _MULTICALL:
        # busybox/toybox run the applet argv[0] names (``busybox APPLET ...`` when argv[0]
        # is the binary itself), whatever path or /proc/self/exe re-exec started them:
        # `wc -c` run by busybox's own shell is wc, not busybox (nor "exe")
        applet = args[0].rsplit("/", 1)[-1]
        if applet in _MULTICALL and len(args) > 1 and not args[1].startswith("-"):
            applet = args[1].rsplit("/", 1)[-1]
        if applet:
            return applet
    if not comm:
        return (exe.rsplit("/", 1)[-1] if exe else "") or (
            args[0].rsplit("/", 1)[-1] if args else "")
    if len(comm) == 15:
        for candidate in (args[0].rsplit("/", 1)[-1] if args else "", exe.rsplit("/", 1)[-1]):
            if candidate.startswith(comm):
                return candidate
    return comm


def read_cgroup(pid: int) -> str | None:
    """The process's cgroup v2 path (the ``0::`` line), or None if it is gone."""
    data = _read(f"/proc/{pid}/cgroup", 4096)
    if not data:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


class ProcStat(NamedTuple):
    comm: str
    state: str  # R running or runnable, S sleeping, D disk wait, Z zombie, T stopped, ...
    ppid: int
    cpu: float  # seconds of CPU used, all threads, user + system
    start: int  # start time in clock ticks since boot (tells a recycled pid apart)
    sid: int = 0  # session id (host pid of the session leader)
    children_cpu: float = 0.0  # seconds used by children it has waited for


def read_stat(pid: int) -> ProcStat | None:
    """One read of /proc/PID/stat, or None if the process is gone."""
    data = _read(f"/proc/{pid}/stat", 4096)
    if not data:
        return None
    try:
        lpar = data.index(b"(")
        rpar = data.rindex(b")")
        rest = data[rpar + 2:].split()
        comm = data[lpar + 1:rpar].decode(errors="replace")
        # fields after comm: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19)
        cpu = (int(rest[11]) + int(rest[12])) / _CLK_TCK
        children = (int(rest[13]) + int(rest[14])) / _CLK_TCK
        return ProcStat(comm, rest[0].decode(), int(rest[1]), cpu, int(rest[19]), int(rest[3]),
                        children)
    except (ValueError, IndexError):
        return None


def read_sched_ns(pid: int) -> int | None:
    """Nanoseconds all threads of ``pid`` spent running or waiting to run (run-queue
    wait), from /proc/PID/task/*/schedstat: CPU *demand*, which unlike CPU use does
    not shrink when the host is too busy to give the process a core."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/schedstat", 128)
        if data:
            run, wait = data.split()[:2]
            total += int(run) + int(wait)
    return total


def read_sched(pid: int, max_threads: int = 256) -> tuple[float, float] | None:
    """(seconds run, seconds waited on a run queue) summed over the threads of
    ``pid`` (at most ``max_threads``), from /proc/PID/task/*/schedstat, or None if the
    process is gone. Their sum is the time the process was *runnable*: a busy loop
    is runnable all the time however little of a core a crowded host gives it, a
    process that sleeps, blocks or is stopped (SIGSTOP duty cycling) is not."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    run = wait = 0
    for tid in tids[:max_threads]:
        data = _read(f"/proc/{pid}/task/{tid}/schedstat", 128)
        if data:
            fields = data.split()
            try:
                run += int(fields[0])
                wait += int(fields[1])
            except (IndexError, ValueError):
                continue
    return run / 1e9, wait / 1e9


def read_endpoints(pid: int, max_fds: int = 4096) -> frozenset[str]:
    """The pipes and sockets ``pid`` holds open, as the kernel names them
    (``pipe:[1234]``, ``socket:[5678]``): two processes holding the same pipe, or the
    two ends of one TCP connection (``read_tcp_established``), talk to each other."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return frozenset()
    out: set[str] = set()
    for fd in fds[:max_fds]:
        link = _readlink(f"/proc/{pid}/fd/{fd}")
        if link and link.startswith(("pipe:[", "socket:[")):
            out.add(link)
    return frozenset(out)


def read_tcp_established(pid: int) -> dict[str, tuple[str, str]]:
    """``socket:[inode]`` -> (local, remote) of every established TCP connection in
    ``pid``'s network namespace (/proc/PID/net/tcp and tcp6, addresses as the kernel
    prints them). A connection between two processes of that namespace appears twice,
    once from each end, with local and remote swapped."""
    out: dict[str, tuple[str, str]] = {}
    for table in ("tcp", "tcp6"):
        data = _read(f"/proc/{pid}/net/{table}", 1 << 20)
        for line in (data or b"").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == b"01":  # TCP_ESTABLISHED
                out[f"socket:[{fields[9].decode()}]"] = (fields[1].decode(), fields[2].decode())
    return out


def read_process(pid: int, *, cgroup: bool = True) -> ProcInfo:
    """Everything /proc tells about ``pid``; ``partial`` when some of it was gone.

    A zombie (exited, not yet reaped) still has /proc/PID but no exe or cmdline;
    it counts as partial too. ``cgroup=False`` skips the cgroup (the caller knows it:
    a sandboxed process cannot change cgroups, so a child's is its parent's).
    """
    base = f"/proc/{pid}"
    raw_args = _read(f"{base}/cmdline")
    exe = _readlink(f"{base}/exe")
    status = _read(f"{base}/status", 4096)
    comm = ""
    ppid: int | None = None
    uid: int | None = None
    if status:
        for line in status.decode(errors="replace").splitlines():
            if line.startswith("Name:"):
                comm = line[5:].strip()
            elif line.startswith("PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
    cwd = _readlink(f"{base}/cwd") or ""
    cgroup_path = read_cgroup(pid) if cgroup else None
    args = tuple(a.decode(errors="replace") for a in raw_args.split(b"\0")[:-1]) if raw_args else ()
    if exe and exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    partial = not (raw_args and exe and status and (cgroup_path or not cgroup))
    name = process_name(comm, exe or "", args)
    return ProcInfo(pid, ppid, name, exe or "", args, cwd, uid, comm, cgroup_path, partial)
