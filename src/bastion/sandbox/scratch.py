"""Size-limited filesystems for what a session writes: its workspace and /tmp.

Every writable place of a sandbox lives on one tmpfs that bastion mounts on the host
with ``size=`` and ``nr_inodes=`` (``limits.inodes``): the kernel refuses a write past
either with ENOSPC, whatever the agent does (``fallocate``, sparse files, many small
files), and the host's disk never holds any of it.

tmpfs pages are charged to the memory cgroup of the process that wrote them, so what
a session stores counts against its memory limit too (an agent cannot use files to
get around that limit). Files cannot be reclaimed, so a session whose files filled
its memory could not even start the ``rm`` that frees them: the size is therefore
``min(limits.disk, limits.memory // 2)`` (``effective_size``), and filling /tmp under
a small memory limit ends in ENOSPC and a ``resource.disk_limit`` verdict, never in
an OOM of everything.

    <state>/sessions/<id>/scratch        the tmpfs: tmp/ (-> /tmp), var-tmp/
                                         (-> /var/tmp), shm/ (-> /dev/shm), and
                                         workspace/ when bastion made the workspace
    <state>/sessions/<id>/workspace      bind mount of scratch/workspace

A workspace the operator configured (an existing directory on the host's disk) is
not limited by this module: ``Sandbox.unenforced`` says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from pathlib import Path

__all__ = ["SCRATCH_DIRS", "bind", "effective_size", "mount_tmpfs", "mounts_below", "unmount",
           "usage"]

SCRATCH_DIRS = {"tmp": "/tmp", "var-tmp": "/var/tmp", "shm": "/dev/shm"}

_MS_NOSUID, _MS_NODEV, _MS_BIND = 2, 4, 4096
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)


def mount_tmpfs(target: Path, *, size: int, inodes: int, uid: int, mode: int = 0o700) -> None:
    """Mount a tmpfs of at most ``size`` bytes and ``inodes`` files on ``target``,
    owned by ``uid``. Raises OSError."""
    # tmpfs rounds size up to whole pages; nr_inodes counts the root directory too
    options = f"size={max(size, 4096)},nr_inodes={max(inodes, 2)},mode={mode:o},uid={uid},gid={uid}"
    if _libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                   options.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount a tmpfs on {target}: {os.strerror(err)}")


def effective_size(disk: int, memory: int) -> int:
    """Bytes the session's tmpfs may hold (see the module docstring)."""
    return max(4096, min(disk, memory // 2))


def bind(source: Path, target: Path) -> None:
    if _libc.mount(os.fsencode(source), os.fsencode(target), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot bind {source} on {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Detach the filesystem mounted on ``target``, if any (idempotent)."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point / gone
            raise OSError(err, f"cannot unmount {target}: {os.strerror(err)}")


def mounts_below(directory: Path) -> list[Path]:
    """Mount points at or below ``directory`` (for cleanup after a crash), deepest first."""
    prefix = str(directory).rstrip("/") + "/"
    found: list[Path] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = line.split()[4].decode(errors="surrogateescape")
            point = point.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
            if point == prefix.rstrip("/") or point.startswith(prefix):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def usage(target: Path) -> tuple[int, int, int, int] | None:
    """(bytes used, bytes total, inodes used, inodes total) of the filesystem."""
    try:
        st = os.statvfs(target)
    except OSError:
        return None
    return ((st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize,
            st.f_files - st.f_ffree, st.f_files)
