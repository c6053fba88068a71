"""Which session process owns a TCP connection, from /proc (attribution for net.*).

The gateway sees a connection by its session-side address and port. The socket with
that local address is found in the session's network namespace (``/proc/PID/net/tcp``
of any session process shows that namespace), and its inode among the open files of
the session's processes. Used to charge a connection to a process and its call, and by
the responder to kill the process behind a connection it cannot cut.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable

__all__ = ["socket_owner"]


def _hex_address(ip: str, port: int) -> str:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return f"{struct.unpack('<I', addr.packed)[0]:08X}:{port:04X}"
    words = struct.unpack("<4I", addr.packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _inodes(pid: int, local: str, table: str) -> set[str]:
    try:
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f, None)
            return {cols[9] for cols in (line.split() for line in f)
                    if len(cols) > 9 and cols[1] == local and cols[9] != "0"}
    except OSError:
        return set()


def socket_owner(pids: Iterable[int], ip: str, port: int) -> int | None:
    """The first of ``pids`` holding the TCP socket bound locally to ``ip:port``."""
    candidates = list(pids)
    if not candidates:
        return None
    try:
        family = socket.AF_INET if ipaddress.ip_address(ip).version == 4 else socket.AF_INET6
    except ValueError:
        return None
    local = _hex_address(ip, port)
    table = "tcp" if family == socket.AF_INET else "tcp6"
    inodes: set[str] = set()
    for pid in candidates[:4]:  # every session process shares one namespace
        inodes = _inodes(pid, local, table)
        if inodes:
            break
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None
