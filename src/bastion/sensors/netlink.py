"""The kernel's process connector (netlink ``NETLINK_CONNECTOR``, ``CN_IDX_PROC``).

The kernel multicasts one message per fork, exec and exit on the host, carrying host
pids and a CLOCK_MONOTONIC timestamp. ``parse`` is sans-I/O (bytes in, events out)
so it is tested without a socket; ``open_connector`` subscribes a socket.

Message layout (linux/netlink.h, linux/connector.h, linux/cn_proc.h):

    nlmsghdr   len u32, type u16, flags u16, seq u32, pid u32            16 bytes
    cn_msg     idx u32, val u32, seq u32, ack u32, len u16, flags u16    20 bytes
    proc_event what u32, cpu u32, timestamp_ns u64                       16 bytes
               + event data (fork: 4 x u32, exec: 2 x u32, exit: 4-6 x u32)
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

__all__ = ["EXEC", "EXIT", "FORK", "ProcEvent", "open_connector", "parse"]

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_DONE = 3

FORK = 0x00000001
EXEC = 0x00000002
EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_HEADER = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_FORK = struct.Struct("=IIII")
_EXEC = struct.Struct("=II")
_EXIT = struct.Struct("=IIII")
_BODY = _NLMSGHDR.size + _CN_MSG.size  # proc_event starts here


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """One fork/exec/exit. For fork, ``pid``/``tgid`` are the child and
    ``ppid``/``ptgid`` the parent; ``exit_code`` is the wait status."""

    what: int
    ts: int
    pid: int
    tgid: int
    ppid: int = 0
    ptgid: int = 0
    exit_code: int = 0
    exit_signal: int = 0


def parse(data: bytes | memoryview) -> list[ProcEvent]:
    """Every process event in one datagram; other messages are ignored."""
    out: list[ProcEvent] = []
    off = 0
    end = len(data)
    while off + _BODY + _HEADER.size <= end:
        length = _NLMSGHDR.unpack_from(data, off)[0]
        if length < _NLMSGHDR.size:
            break
        idx, val = _CN_MSG.unpack_from(data, off + _NLMSGHDR.size)[:2]
        if idx == CN_IDX_PROC and val == CN_VAL_PROC:
            base = off + _BODY
            what, _cpu, ts = _HEADER.unpack_from(data, base)
            body = base + _HEADER.size
            if what == FORK and body + _FORK.size <= end:
                ppid, ptgid, pid, tgid = _FORK.unpack_from(data, body)
                out.append(ProcEvent(FORK, ts, pid, tgid, ppid, ptgid))
            elif what == EXEC and body + _EXEC.size <= end:
                pid, tgid = _EXEC.unpack_from(data, body)
                out.append(ProcEvent(EXEC, ts, pid, tgid))
            elif what == EXIT and body + _EXIT.size <= end:
                pid, tgid, code, sig = _EXIT.unpack_from(data, body)
                out.append(ProcEvent(EXIT, ts, pid, tgid, exit_code=code, exit_signal=sig))
        off += (length + 3) & ~3
    return out


def _control(op: int) -> bytes:
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn


def open_connector(rcvbuf: int) -> socket.socket:
    """A subscribed process-connector socket (needs CAP_NET_ADMIN).

    ``rcvbuf`` bounds how far the reader may fall behind before the kernel drops
    messages and reports ENOBUFS; SO_RCVBUFFORCE lets root exceed rmem_max.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                         NETLINK_CONNECTOR)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, CN_IDX_PROC))
        sock.send(_control(PROC_CN_MCAST_LISTEN))
    except BaseException:
        sock.close()
        raise
    return sock
