"""Reading one process from /proc, tolerating that it may vanish at any moment.

A process can exit between the kernel telling us about it and us reading /proc;
``read_process`` then returns what it could read with ``partial=True`` rather than
nothing, so the event is still recorded (and still attributed through the pid table
the process sensor keeps from fork events).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ProcInfo", "read_cgroup", "read_process", "read_stat"]

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


def read_cgroup(pid: int) -> str | None:
    """The process's cgroup v2 path (the ``0::`` line), or None if it is gone."""
    data = _read(f"/proc/{pid}/cgroup", 4096)
    if not data:
        return None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def read_stat(pid: int) -> tuple[str, int, float, int] | None:
    """(comm, ppid, cpu seconds used, start time in clock ticks since boot)."""
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
        return comm, int(rest[1]), cpu, int(rest[19])
    except (ValueError, IndexError):
        return None


def read_process(pid: int) -> ProcInfo:
    """Everything /proc tells about ``pid``; ``partial`` when some of it was gone.

    A zombie (exited, not yet reaped) still has /proc/PID but no exe or cmdline;
    it counts as partial too.
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
    cgroup = read_cgroup(pid)
    args = tuple(a.decode(errors="replace") for a in raw_args.split(b"\0")[:-1]) if raw_args else ()
    if exe and exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    partial = not (raw_args and exe and status and cgroup)
    name = (exe.rsplit("/", 1)[-1] if exe else "") or comm or (
        args[0].rsplit("/", 1)[-1] if args else "")
    return ProcInfo(pid, ppid, name, exe or "", args, cwd, uid, comm, cgroup, partial)
