"""Which socket of a session opened a connection, through ``sock_diag`` (inet_diag).

The gateway sees a connection by its session-side 4-tuple. One netlink request in the
session's network namespace returns that socket's *cgroup id* (``INET_DIAG_CGROUP_ID``,
the inode of the v2 cgroup the creating task was in) and its inode. The cgroup names the
tool call without touching ``/proc``; the pid is then looked for only among that call
cgroup's processes (usually one or two), not the whole session.

Both address families are asked: a socket opened as AF_INET6 and connected to an
IPv4-mapped address (``::ffff:a.b.c.d``) is an AF_INET6 socket to the kernel.

No parsing library: the request and the reply are a few fixed C structures, and this
runs once per connection on the gateway's path.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["DiagSocket", "Owners", "SocketInfo", "pid_holding"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_INET_DIAG_CGROUP_ID = 21
_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
# (sport, dport big-endian; src[16], dst[16]; if; cookie[2])
_REQ = struct.Struct("=BBBxI")
_SOCKID = struct.Struct(">HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
_NLMSG = struct.Struct("=IHHII")
# struct inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue,
# wqueue, uid, inode
_MSG_HEAD = struct.Struct("=BBBB")
_MSG_TAIL = struct.Struct("=IIIII")


@dataclass(frozen=True)
class SocketInfo:
    """What the kernel says about one socket."""

    inode: int
    uid: int
    cgroup_id: int | None
    family: int


@lru_cache(maxsize=1024)
def _packed(family: int, ip: str) -> bytes:
    addr = ipaddress.ip_address(ip)
    if family == socket.AF_INET6 and addr.version == 4:
        addr = ipaddress.IPv6Address("::ffff:" + ip)
    raw = addr.packed
    return raw + b"\0" * (16 - len(raw))


class DiagSocket:
    """A sock_diag netlink socket bound to one network namespace (the one the calling
    thread is in when it is created). Not thread-safe: use one per thread or lock."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                   _NETLINK_SOCK_DIAG)
        self._sock.settimeout(1.0)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _ask(self, family: int, protocol: int, sport: int, dport: int, src: bytes,
             dst: bytes, dump: bool) -> list[SocketInfo]:
        self._seq += 1
        body = (_REQ.pack(family, protocol, 0, _ALL_STATES)
                + _SOCKID.pack(sport, dport, src, dst)
                + _SOCKID_TAIL.pack(0, _NOCOOKIE, _NOCOOKIE))
        flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
        self._sock.send(_NLMSG.pack(_NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY, flags,
                                    self._seq, 0) + body)
        found: list[SocketInfo] = []
        while True:
            data = self._sock.recv(65536)
            pos = 0
            while pos + _NLMSG.size <= len(data):
                length, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, pos)
                if length < _NLMSG.size:
                    return found
                if seq == self._seq:
                    if kind == _NLMSG_DONE or kind == _NLMSG_ERROR:
                        return found
                    info = _parse(data[pos + _NLMSG.size:pos + length])
                    if info is not None and (not dump or _matches(
                            data[pos + _NLMSG.size:pos + length], sport, src)):
                        found.append(info)
                pos += (length + 3) & ~3
            if not dump:
                return found

    def tcp(self, src_ip: str, src_port: int, dst_ip: str, dst_port: int) -> SocketInfo | None:
        """The TCP socket with this exact 4-tuple (session side), IPv4 or v4-mapped IPv6."""
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                found = self._ask(family, socket.IPPROTO_TCP, src_port, dst_port,
                                  _packed(family, src_ip), _packed(family, dst_ip), dump=False)
            except (OSError, ValueError):
                continue
            if found:
                return found[0]
        return None

    def udp(self, src_ip: str, src_port: int) -> SocketInfo | None:
        """The UDP socket bound to ``src_port`` (connected or not), either family."""
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                found = self._ask(family, socket.IPPROTO_UDP, src_port, 0,
                                  _packed(family, src_ip), b"\0" * 16, dump=True)
            except (OSError, ValueError):
                continue
            if found:
                return found[0]
        return None


def _matches(msg: bytes, sport: int, src: bytes) -> bool:
    got_sport = struct.unpack_from(">H", msg, 4)[0]
    return got_sport == sport


def _parse(msg: bytes) -> SocketInfo | None:
    head = _MSG_HEAD.size + 48
    if len(msg) < head + _MSG_TAIL.size:
        return None
    family = msg[0]
    _expires, _rq, _wq, uid, inode = _MSG_TAIL.unpack_from(msg, head)
    cgroup_id = None
    pos = head + _MSG_TAIL.size
    while pos + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, pos)
        if alen < 4:
            break
        if atype & 0x3FFF == _INET_DIAG_CGROUP_ID and alen >= 12:
            cgroup_id = struct.unpack_from("=Q", msg, pos + 4)[0]
        pos += (alen + 3) & ~3
    return SocketInfo(inode=inode, uid=uid, cgroup_id=cgroup_id, family=family)


def pid_holding(pids: list[int], inode: int) -> int | None:
    """The first of ``pids`` with an fd on socket ``inode`` (a short list: the processes
    of one call cgroup, newest first)."""
    return socket_inodes(pids, stop=inode).get(inode)


def socket_inodes(pids: list[int], stop: int | None = None) -> dict[int, int]:
    """socket inode -> pid for the open sockets of ``pids`` (stops early once ``stop``
    is found). One pass serves every socket of a process: a scanner opening 200
    sockets costs one scan, not 200."""
    found: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inode = int(target[8:-1])
                        found.setdefault(inode, pid)
        if stop is not None and stop in found:
            break
    return found


class Owners:
    """Socket owner → (pid, call) for one session: one sock_diag request in the
    session's namespace, the call from the socket's cgroup id, the pid from that call
    cgroup's few processes. Thread-safe; remembers the answer per connection.

    ``cgroup_root`` returns the session's v2 cgroup directory (None before the sandbox
    exists); ``call_for_cgroup`` maps a cgroup path to the session's call;
    ``fallback`` names the call to charge when the socket is already gone (a UDP probe
    whose socket closed before the drop counters were read)."""

    def __init__(self, netns_path: str, cgroup_root: Callable[[], Path | None],
                 call_for_cgroup: Callable[[str], Any],
                 fallback: Callable[[], Any] | None = None) -> None:
        self._netns = netns_path
        self._root = cgroup_root
        self._call_for_cgroup = call_for_cgroup
        self._fallback = fallback
        self._diag: DiagSocket | None = None
        self._lock = threading.Lock()
        self._by_ino: dict[int, Path] = {}
        self._inode_pid: dict[int, int] = {}
        self._foreign: set[int] = set()  # cgroup ids known not to be the session's
        self._cache: dict[tuple[Any, ...], tuple[int | None, Any]] = {}

    def close(self) -> None:
        with self._lock:
            if self._diag is not None:
                self._diag.close()
                self._diag = None

    def _socket(self) -> DiagSocket:
        if self._diag is None:
            from .netns import inside

            with inside(self._netns):
                self._diag = DiagSocket()
        return self._diag

    def known(self, fields: Mapping[str, Any]) -> bool:
        """Whether ``lookup(fields)`` is answered from memory (no netlink, no /proc)."""
        udp = fields.get("net.proto") == "udp" or "dns.name" in fields
        return not udp and (udp, fields.get("net.src_ip"), fields.get("net.src_port"),
                            fields.get("net.dst_ip"), fields.get("net.dst_port")) in self._cache

    def lookup(self, fields: Mapping[str, Any]) -> tuple[int | None, Any]:
        """(pid, call) of the socket a gateway event is about, or (None, fallback)."""
        src_ip, src_port = fields.get("net.src_ip"), fields.get("net.src_port")
        if src_ip is None or src_port is None:
            return None, self._fallback() if self._fallback else None
        udp = fields.get("net.proto") == "udp" or "dns.name" in fields
        dst_ip, dst_port = fields.get("net.dst_ip"), fields.get("net.dst_port")
        key = (udp, src_ip, src_port, dst_ip, dst_port)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            diag = self._socket()
            if udp:
                info = diag.udp(str(src_ip), int(src_port))
            elif dst_ip is not None and dst_port is not None:
                info = diag.tcp(str(src_ip), int(src_port), str(dst_ip), int(dst_port))
            else:
                info = None
            found: tuple[int | None, Any] = (None, None)
            if info is not None:
                found = self._resolve(info)
        if found[1] is None and self._fallback is not None:
            found = (found[0], self._fallback())
        if not udp:  # a UDP port is reused by the next socket: never cached
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _resolve(self, info: SocketInfo) -> tuple[int | None, Any]:
        path = self._cgroup_path(info.cgroup_id) if info.cgroup_id else None
        if path is None:
            return None, None
        call = self._call_for_cgroup(str(path))
        pid = self._inode_pid.get(info.inode)
        if pid is None:
            pids: list[int] = []
            with contextlib.suppress(OSError, ValueError):
                pids = [int(x) for x in (path / "cgroup.procs").read_text().split()]
            fresh = socket_inodes(pids[::-1], stop=info.inode)
            if len(self._inode_pid) > 65536:
                self._inode_pid.clear()
            self._inode_pid.update(fresh)
            pid = fresh.get(info.inode)
        return pid, call

    def _cgroup_path(self, cgroup_id: int) -> Path | None:
        path = self._by_ino.get(cgroup_id)
        if path is not None or cgroup_id in self._foreign:
            return path
        root = self._root()
        if root is None:
            return None
        with contextlib.suppress(OSError):
            with os.scandir(root) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        self._by_ino[entry.inode()] = Path(entry.path)
            self._by_ino[os.stat(root).st_ino] = root
        found = self._by_ino.get(cgroup_id)
        if found is None:  # not this session's (a socket made outside the sandbox)
            if len(self._foreign) > 1024:
                self._foreign.clear()
            self._foreign.add(cgroup_id)
        return found
