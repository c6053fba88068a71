"""A minimal inotify binding (ctypes over libc): add watches, read events.

Only what the file sensor needs; parsing is separate from reading so it is tested
on bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

__all__ = [
    "IN_ATTRIB",
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_DELETE_SELF",
    "IN_IGNORED",
    "IN_ISDIR",
    "IN_MODIFY",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_Q_OVERFLOW",
    "Inotify",
    "InotifyEvent",
    "parse_events",
]

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("=iIII")  # wd, mask, cookie, len


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One change in a watched directory. ``pid`` is the writer (host pid) when the
    backend can tell (fanotify); inotify cannot."""

    wd: int
    mask: int
    name: str
    pid: int | None = None


def parse_events(data: bytes) -> list[InotifyEvent]:
    out: list[InotifyEvent] = []
    off = 0
    while off + _HEADER.size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, off)
        raw = data[off + _HEADER.size: off + _HEADER.size + length]
        out.append(InotifyEvent(wd, mask, raw.rstrip(b"\0").decode(errors="surrogateescape")))
        off += _HEADER.size + length
    return out


class Inotify:
    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd

    def add_dir(self, path: str, mask: int) -> int:
        """Watch a directory (never through a symlink: the agent controls the tree)."""
        wd = self._add(self.fd, os.fsencode(path), mask | IN_ONLYDIR | IN_DONT_FOLLOW)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        return int(wd)

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)

    def read(self) -> list[InotifyEvent]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        return parse_events(data)

    def close(self) -> None:
        os.close(self.fd)
