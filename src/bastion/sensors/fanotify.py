"""A minimal fanotify binding (ctypes over libc) that says *who* wrote.

inotify reports what changed but not which process changed it; fanotify reports the
writer's pid (host pid namespace), which the file sensor maps to the writer's call
cgroup, so a background process of call c1 that writes ``.bashrc`` during c2 is
charged to c1. It is used in the same shape as ``inotify.Inotify``: directory marks
(``add_dir`` returns an id), events with that id, the change's mask and the entry
name, plus the pid.

The group reports directory file handles and entry names (``FAN_REPORT_DFID_NAME``,
Linux >= 5.9): each marked directory's handle is looked up once with
``name_to_handle_at`` and events are matched back by handle, never by path. The
event bits are the same values as inotify's (IN_CLOSE_WRITE == FAN_CLOSE_WRITE, ...);
a marked directory that goes away is reported as ``IN_IGNORED`` as inotify does.

Parsing is separate from reading, so it is tested on bytes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading

from .inotify import IN_IGNORED, InotifyEvent

__all__ = ["FAN_ACCESS", "Fanotify", "parse_events"]

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_DONT_FOLLOW = 0x4
FAN_MARK_ONLYDIR = 0x8
FAN_DELETE_SELF = 0x400
FAN_ACCESS = 0x01  # a child was read (credential stores: who reads them)
FAN_Q_OVERFLOW = 0x4000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000
FAN_NOFD = -1
_AT_FDCWD = -100
_AT_HANDLE_FID = 0x200  # a handle that identifies, need not decode (Linux >= 6.5)
_MAX_HANDLE_SZ = 128

_INFO_FID, _INFO_DFID_NAME, _INFO_DFID = 1, 2, 3
_META = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO = struct.Struct("=BBH")  # info_type, pad, len
_FSID = 8
_HANDLE = struct.Struct("=Ii")  # handle_bytes, handle_type


def _key(handle_type: int, handle: bytes) -> bytes:
    return struct.pack("=i", handle_type) + handle


def parse_events(data: bytes, dirs: dict[bytes, int]) -> list[InotifyEvent]:
    """Events from a read of the fanotify fd; ``dirs`` maps a directory handle key
    to its id (events on unknown directories are skipped)."""
    out: list[InotifyEvent] = []
    off = 0
    while off + _META.size <= len(data):
        event_len, _vers, _res, meta_len, mask, fd, pid = _META.unpack_from(data, off)
        if event_len < _META.size:
            break
        if fd >= 0:
            os.close(fd)  # never asked for, but never leak one
        end = off + event_len
        if mask & FAN_Q_OVERFLOW:
            out.append(InotifyEvent(-1, FAN_Q_OVERFLOW, "", pid))
            off = end
            continue
        info = off + meta_len
        while info + _INFO.size <= end:
            info_type, _pad, length = _INFO.unpack_from(data, info)
            if length < _INFO.size:
                break
            if info_type in (_INFO_FID, _INFO_DFID_NAME, _INFO_DFID):
                h = info + _INFO.size + _FSID
                size, handle_type = _HANDLE.unpack_from(data, h)
                handle = bytes(data[h + _HANDLE.size: h + _HANDLE.size + size])
                name = ""
                if info_type == _INFO_DFID_NAME:
                    raw = data[h + _HANDLE.size + size: info + length]
                    name = raw.split(b"\0", 1)[0].decode(errors="surrogateescape")
                wd = dirs.get(_key(handle_type, handle))
                if wd is not None:
                    m = mask & ~FAN_EVENT_ON_CHILD
                    if m & FAN_DELETE_SELF and name in ("", "."):
                        m |= IN_IGNORED
                    out.append(InotifyEvent(wd, m, "" if name == "." else name, pid))
                break
            info += length
        off = end
    return out


class Fanotify:
    """One fanotify group with directory marks. Needs CAP_SYS_ADMIN; raises OSError
    where the kernel or the filesystem cannot report directory handles."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._mark = libc.fanotify_mark
        self._mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]
        self._n2h = libc.name_to_handle_at
        self._n2h.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        init = libc.fanotify_init
        init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        fd = init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DIR_FID
                  | FAN_REPORT_NAME, os.O_RDONLY | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_init: {os.strerror(err)}")
        self.fd = fd
        self._lock = threading.Lock()
        self._dirs: dict[bytes, int] = {}  # handle key -> id
        self._paths: dict[int, tuple[bytes, bytes, int]] = {}  # id -> (path, key, mask)
        self._next = 0

    def _handle(self, path: bytes) -> bytes:
        buf = ctypes.create_string_buffer(_HANDLE.size + _MAX_HANDLE_SZ)
        struct.pack_into("=Ii", buf, 0, _MAX_HANDLE_SZ, 0)
        mount_id = ctypes.c_int()
        # flags 0: never follow a final symlink (the agent controls the tree); a
        # filesystem that cannot make decodable handles (an overlay: a workspace on
        # the host's disk, sandbox/scratch.py) may still identify a directory the way
        # fanotify reports it (AT_HANDLE_FID, Linux >= 6.5)
        if self._n2h(_AT_FDCWD, path, buf, ctypes.byref(mount_id), 0) < 0:
            err = ctypes.get_errno()
            if err == errno.EOPNOTSUPP:
                struct.pack_into("=Ii", buf, 0, _MAX_HANDLE_SZ, 0)
                if self._n2h(_AT_FDCWD, path, buf, ctypes.byref(mount_id), _AT_HANDLE_FID) < 0:
                    err = ctypes.get_errno()
                else:
                    err = 0
            if err:
                raise OSError(err, f"name_to_handle_at {path!r}: {os.strerror(err)}")
        size, handle_type = _HANDLE.unpack_from(buf.raw, 0)
        return _key(handle_type, buf.raw[_HANDLE.size:_HANDLE.size + size])

    def add_dir(self, path: str, mask: int) -> int:
        """Mark a directory for changes of its entries (never through a symlink)."""
        raw = os.fsencode(path)
        full = mask | FAN_EVENT_ON_CHILD | FAN_ONDIR | FAN_DELETE_SELF
        key = self._handle(raw)  # first: a mark whose events cannot be matched is useless
        if self._mark(self.fd, FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW | FAN_MARK_ONLYDIR, full,
                      _AT_FDCWD, raw) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_mark {path}: {os.strerror(err)}")
        with self._lock:
            wd = self._dirs.get(key)
            if wd is None:
                self._next += 1
                wd = self._dirs[key] = self._next
            old = self._paths.get(wd)
            if old is not None:
                full |= old[2]  # marks add up: removing one removes all it was given
            self._paths[wd] = (raw, key, full)
        return wd

    def add_file(self, path: str, mask: int) -> None:
        """Mark one file (never through a symlink): its events are reported with its
        directory's handle and its name, so they match that directory's id when the
        directory is marked too. The mark goes with the inode (a file renamed over it
        is not marked)."""
        if self._mark(self.fd, FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW, mask, _AT_FDCWD,
                      os.fsencode(path)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_mark {path}: {os.strerror(err)}")

    def remove_file(self, path: str, mask: int) -> None:
        self._mark(self.fd, FAN_MARK_REMOVE | FAN_MARK_DONT_FOLLOW, mask, _AT_FDCWD,
                   os.fsencode(path))  # fails harmlessly when the file is gone

    def remove(self, wd: int) -> None:
        with self._lock:
            entry = self._paths.pop(wd, None)
            if entry is None:
                return
            raw, key, full = entry
            self._dirs.pop(key, None)
        self._mark(self.fd, FAN_MARK_REMOVE | FAN_MARK_DONT_FOLLOW | FAN_MARK_ONLYDIR, full,
                   _AT_FDCWD, raw)  # fails harmlessly when the directory is gone

    def read(self) -> list[InotifyEvent]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        with self._lock:
            dirs = dict(self._dirs)
        events = parse_events(data, dirs)
        for ev in events:
            if ev.mask & IN_IGNORED:
                with self._lock:
                    entry = self._paths.pop(ev.wd, None)
                    if entry is not None:
                        self._dirs.pop(entry[1], None)
        return events

    def close(self) -> None:
        os.close(self.fd)
