"""How recently each TCP connection of a session carried data, from the kernel.

A background daemon counts as working for a running call only while they *exchange
data* (``sensors/burn.py``): an established but idle loopback connection is no
request. The kernel keeps, per TCP socket, the milliseconds since data was last sent
and received (``struct tcp_info`` ``tcpi_last_data_sent`` / ``tcpi_last_data_recv``);
one ``sock_diag`` dump in the session's network namespace returns them for every
socket, keyed by inode like ``/proc/PID/fd`` links.

The netlink socket is opened once per session from a short-lived thread that joins
the namespace of one of the session's processes (``setns`` affects that thread only);
a socket stays in the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

__all__ = ["TcpActivity"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_INET_DIAG_INFO = 2
_ESTABLISHED = 1 << 1  # TCP_ESTABLISHED = 1
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# struct tcp_info: tcpi_last_data_sent at 44, tcpi_last_data_recv at 52 (u32, ms ago,
# in jiffies: a request sent right after connecting can share the connect's tick),
# tcpi_bytes_acked at 120 (u64: data this end sent that the peer has, SYN excluded)
_LAST_SENT, _LAST_RECV, _BYTES_ACKED = 44, 52, 120


class TcpActivity:
    """``socket:[inode]`` -> (ms since it last sent data, ms since it last received
    data, bytes it sent), for the established TCP sockets of one network namespace."""

    def __init__(self, pid: int) -> None:
        """Open a sock_diag socket in the network namespace of ``pid``. Raises
        OSError when the process is gone or the namespace cannot be joined."""
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def join() -> None:
            try:
                fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:  # this thread only
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                finally:
                    os.close(fd)
                made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                          _NETLINK_SOCK_DIAG))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                failed.append(exc)

        thread = threading.Thread(target=join, name="bastion-tcpinfo-netns", daemon=True)
        thread.start()
        thread.join()
        if failed:
            raise failed[0]  # FileNotFoundError: the process is gone
        if not made:
            raise OSError(f"cannot open sock_diag in the namespace of pid {pid}")
        self._sock = made[0]
        self._sock.settimeout(1.0)

    def close(self) -> None:
        self._sock.close()

    def idle_ms(self) -> dict[str, tuple[int, int, int]]:
        out: dict[str, tuple[int, int, int]] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            out.update(self._dump(family))
        return out

    def _dump(self, family: int) -> dict[str, tuple[int, int, int]]:
        # inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes)
        req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 1 << (_INET_DIAG_INFO - 1),
                          _ESTABLISHED) + bytes(48)
        header = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                             _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
        self._sock.send(header + req)
        out: dict[str, tuple[int, int, int]] = {}
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if length < 16:
                    return out
                if kind == _NLMSG_DONE:
                    return out
                if kind == _NLMSG_ERROR:
                    return out
                msg = data[offset + 16:offset + length]
                parsed = _parse(msg)
                if parsed is not None:
                    out[f"socket:[{parsed[0]}]"] = parsed[1:]
                offset += (length + 3) & ~3
            if not data:
                return out


def _parse(msg: bytes) -> tuple[int, int, int, int] | None:
    """(inode, ms since data was last sent, ms since data was last received, bytes
    sent and acknowledged) of one inet_diag_msg."""
    # inet_diag_msg: family, state, timer, retrans (4), sockid (48), expires, rqueue,
    # wqueue, uid, inode (5 x u32) = 72 bytes, then attributes
    if len(msg) < 72:
        return None
    inode = struct.unpack_from("=I", msg, 68)[0]
    offset = 72
    while offset + 4 <= len(msg):
        length, kind = struct.unpack_from("=HH", msg, offset)
        if length < 4:
            return None
        if kind == _INET_DIAG_INFO and length - 4 >= _BYTES_ACKED + 8:
            sent, recv = (struct.unpack_from("=I", msg, offset + 4 + at)[0]
                          for at in (_LAST_SENT, _LAST_RECV))
            acked = struct.unpack_from("=Q", msg, offset + 4 + _BYTES_ACKED)[0]
            return inode, sent, recv, acked
        offset += (length + 3) & ~3
    return None
