"""Apply an overlayfs upper directory to the directory below it (its lower layer).

A workspace the operator configured lives on the host's disk, where nothing limits
what the agent writes. bastion mounts an overlay on it for the session (see
``scratch.overlay_workspace``): the host directory is the read-only lower layer and
every change the agent makes lands in an upper directory on the session's
size-limited tmpfs, so a disk bomb fails with ENOSPC there instead of filling the host.
When the session ends the overlay is detached and this module writes the changes back
into the host directory, so the operator finds the workspace as the agent left it.

The upper directory is written by the agent (through the overlay): every name in it
is untrusted. Everything here works on directory fds and never follows a link: a lower
entry of another type is removed (without following it) before the upper one is
created, a file is always created anew (never written through an existing inode, so
a hard link planted earlier cannot redirect the write), and sparse files stay sparse
(a 1 TiB sparse file on the tmpfs takes no room there; written densely it would fill
the host's disk).

What the upper layer holds (overlayfs "upper and lower" documentation; the overlay is
mounted with ``redirect_dir=off,metacopy=off,index=off`` so nothing else appears):

- a character device 0/0 is a *whiteout*: the lower entry of that name was deleted;
- a directory with ``trusted.overlay.opaque`` hides the lower directory's contents:
  it replaces the lower directory whole;
- any other entry is new or changed: it replaces the lower entry (directories merge).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

__all__ = ["MAX_DEPTH", "write_back"]

MAX_DEPTH = 128  # directory levels written back (two fds held per level)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPAQUE = "trusted.overlay.opaque"
_CHUNK = 1 << 20


def write_back(upper: Path, lower: Path) -> list[str]:
    """Write the changes recorded in ``upper`` into ``lower``. Returns what could not
    be written back (one line each; empty when everything was), never raises for one
    entry: the rest is still written."""
    problems: list[str] = []
    ufd = os.open(upper, _DIR)
    try:
        lfd = os.open(lower, _DIR)
        try:
            _merge(ufd, lfd, "", problems, 0)
        finally:
            os.close(lfd)
    finally:
        os.close(ufd)
    return problems


def _merge(ufd: int, lfd: int, rel: str, problems: list[str], depth: int) -> None:
    with os.scandir(ufd) as entries:
        names = [e.name for e in entries]
    for name in names:
        where = f"{rel}/{name}" if rel else name
        try:
            st = os.stat(name, dir_fd=ufd, follow_symlinks=False)
            _apply(ufd, lfd, name, st, where, problems, depth)
        except OSError as exc:
            problems.append(f"{where}: {os.strerror(exc.errno or 0) or exc}")


def _apply(ufd: int, lfd: int, name: str, st: os.stat_result, where: str,
           problems: list[str], depth: int) -> None:
    mode = st.st_mode
    if stat.S_ISCHR(mode) and st.st_rdev == 0:  # whiteout: deleted
        _remove(lfd, name)
    elif stat.S_ISDIR(mode):
        if depth >= MAX_DEPTH:
            problems.append(f"{where}: deeper than {MAX_DEPTH} directories, not written back")
            return
        sub_u = os.open(name, _DIR, dir_fd=ufd)
        try:
            opaque = _opaque(sub_u)
            lower = _lstat(lfd, name)
            if lower is not None and (opaque or not stat.S_ISDIR(lower.st_mode)):
                _remove(lfd, name)
                lower = None
            if lower is None:
                os.mkdir(name, 0o700, dir_fd=lfd)
            sub_l = os.open(name, _DIR, dir_fd=lfd)
            try:
                _merge(sub_u, sub_l, where, problems, depth + 1)
                os.fchown(sub_l, st.st_uid, st.st_gid)
                os.fchmod(sub_l, stat.S_IMODE(mode))
                os.utime(sub_l, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(sub_l)
        finally:
            os.close(sub_u)
    elif stat.S_ISREG(mode):
        _remove(lfd, name)
        _copy_file(ufd, lfd, name, st)
    elif stat.S_ISLNK(mode):
        target = os.readlink(name, dir_fd=ufd)
        _remove(lfd, name)
        os.symlink(target, name, dir_fd=lfd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=lfd, follow_symlinks=False)
        with contextlib.suppress(NotImplementedError, OSError):
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=lfd,
                     follow_symlinks=False)
    elif stat.S_ISFIFO(mode):
        _remove(lfd, name)
        os.mkfifo(name, stat.S_IMODE(mode), dir_fd=lfd)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=lfd, follow_symlinks=False)
    else:  # a socket or a device node: nothing a workspace keeps
        problems.append(f"{where}: a {stat.filemode(mode)[0]!r} special file, not written back")


def _copy_file(ufd: int, lfd: int, name: str, st: os.stat_result) -> None:
    """A new file in ``lfd`` with the content, owner, mode and times of the upper one,
    holes kept as holes."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=ufd)
    try:
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=lfd)
        try:
            size = os.fstat(src).st_size
            offset = 0
            while offset < size:
                try:
                    data = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: only a hole is left
                        raise
                    break
                end = os.lseek(src, data, os.SEEK_HOLE)
                pos = data
                while pos < end:
                    chunk = os.pread(src, min(_CHUNK, end - pos), pos)
                    if not chunk:
                        break
                    while chunk:  # a short write on a nearly full disk: write the rest
                        written = os.pwrite(dst, chunk, pos)
                        pos += written
                        chunk = chunk[written:]
                offset = end
            os.ftruncate(dst, size)
            os.fchown(dst, st.st_uid, st.st_gid)
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, _OPAQUE) in (b"y", b"x")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` from the directory, whatever it is, never following a link."""
    st = _lstat(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: links inside are not followed
    else:
        os.unlink(name, dir_fd=dir_fd)
