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

A workspace the operator configured (an existing directory on the host's disk, as
the red-team runner and many trainers use) gets the same limit through an overlay
(``overlay_workspace``): overlayfs is mounted on the directory itself, with the
directory as its read-only lower layer and an upper layer on the session's tmpfs.
Everything the agent writes there (new files, copies of files it changed, whiteouts
for deletions) takes room on the tmpfs, so ``fallocate -l 50G``, ``dd`` or a Python
loop writing a huge file fails with ENOSPC on the call like in /tmp; reads of what
the operator put there cost nothing. The mount is on the host's path itself, so the
host (a harness reading a file the agent wrote, the file sensor, a quarantine) sees
the workspace as the agent does while the session runs. When the session ends
``unmount`` detaches the overlay and writes the changes back into the directory
(``writeback.py``), so the operator finds what the agent left, as before.

Why an overlay and not the alternatives on Debian 12: an XFS/ext4 project quota needs
the host's filesystem mounted with ``prjquota`` (a root filesystem seldom is, and it
cannot be turned on live); a loop-mounted image or a size-limited copy must copy the
whole workspace in and out (a large repository twice per episode); RLIMIT_FSIZE
bounds one file, not the total. The overlay copies only what the agent changes, and
its limit is the same kernel tmpfs limit /tmp already has. The price: renaming a
directory that came from the host fails with EXDEV (``redirect_dir=off`` keeps the
upper layer plain; ``mv`` and ``shutil.move`` copy instead), and changing a large
host file copies it up whole (it counts against the limit).

Two live sessions configured with one host directory cannot both overlay it: the
second finds the first's overlay there and runs without the workspace limit
(``Sandbox.unenforced`` says ``disk(workspace)``), as does a workspace on a filesystem
overlayfs cannot use as a lower layer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import threading
from pathlib import Path

from .writeback import write_back

__all__ = ["SCRATCH_DIRS", "bind", "effective_size", "mount_tmpfs", "mounts_below",
           "overlay_workspace", "release_leftover_overlay", "unmount", "usage"]

_log = logging.getLogger(__name__)

SCRATCH_DIRS = {"tmp": "/tmp", "var-tmp": "/var/tmp", "shm": "/dev/shm"}

_MS_NOSUID, _MS_NODEV, _MS_BIND = 2, 4, 4096
_MNT_DETACH = 2
# a plain upper layer: whiteouts and opaque directories only (see writeback.py)
_OVERLAY_OPTIONS = "redirect_dir=off,metacopy=off,index=off,xino=off"
UPPER, WORK = "ws-upper", "ws-work"  # below the session's scratch tmpfs
_RECORD = "workspace-overlay"  # in the session directory: which host path is overlaid
_overlays: dict[str, Path] = {}  # overlaid workspace -> its upper directory
_overlays_lock = threading.Lock()
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


def _escape(path: Path) -> str:
    """A path as overlayfs's option parser reads it (``,`` ``:`` ``\\`` escaped)."""
    return str(path).replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _mount_at(path: Path) -> tuple[str, str] | None:
    """(filesystem type, super options) of the topmost mount on ``path``, if any."""
    found = None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.decode(errors="surrogateescape").split()
            point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace(
                "\\134", "\\")
            if point == str(path):
                tail = fields[fields.index("-") + 1:]
                found = (tail[0], tail[2] if len(tail) > 2 else "")  # the last is on top
    return found


def overlay_workspace(workspace: Path, scratch: Path) -> str | None:
    """Limit a host workspace to the session's tmpfs ``scratch`` (module docstring).
    Returns None when it is limited, else why not (the session says the limit is
    unenforced). The session directory (``scratch``'s parent) records the path, so
    ``bastion cleanup`` can write back and detach it after a crash."""
    workspace = Path(os.path.realpath(workspace))
    top = _mount_at(workspace)
    if top is not None and top[0] == "overlay" and f"/{UPPER}" in top[1]:
        return "another live session overlays the same workspace directory"
    upper, work = scratch / UPPER, scratch / WORK
    upper.mkdir(mode=0o700)
    work.mkdir(mode=0o700)
    st = os.stat(workspace)  # the merged root takes its owner and mode from the upper one
    os.chown(upper, st.st_uid, st.st_gid)
    os.chmod(upper, st.st_mode & 0o7777)
    (scratch.parent / _RECORD).write_text(str(workspace) + "\n")
    options = (f"lowerdir={_escape(workspace)},upperdir={_escape(upper)},"
               f"workdir={_escape(work)},{_OVERLAY_OPTIONS}")
    if _libc.mount(b"overlay", os.fsencode(workspace), b"overlay", _MS_NOSUID | _MS_NODEV,
                   options.encode()) != 0:
        err = ctypes.get_errno()
        with contextlib.suppress(OSError):
            (scratch.parent / _RECORD).unlink()
        return f"overlayfs cannot mount on {workspace}: {os.strerror(err)}"
    with _overlays_lock:
        _overlays[str(workspace)] = upper
    return None


def _release_overlay(workspace: Path, upper: Path) -> None:
    """Detach a workspace overlay, then write its changes back into the directory."""
    with _overlays_lock:
        _overlays.pop(str(workspace), None)
    if _libc.umount2(os.fsencode(workspace), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot unmount {workspace}: {os.strerror(err)}")
    problems = write_back(upper, workspace)
    with contextlib.suppress(OSError):
        (upper.parent.parent / _RECORD).unlink()
    if problems:
        _log.warning("workspace %s: %d change(s) not written back: %s", workspace,
                     len(problems), "; ".join(problems[:5]))


def release_leftover_overlay(session_dir: Path) -> None:
    """After a crash: write back and detach the workspace overlay a dead session left
    (only if the topmost mount on the recorded path is that session's overlay)."""
    try:
        workspace = Path((session_dir / _RECORD).read_text().strip())
    except OSError:
        return
    upper = session_dir / "scratch" / UPPER
    top = _mount_at(workspace)
    if top is not None and top[0] == "overlay" and f"upperdir={upper}," in top[1] + ",":
        _release_overlay(workspace, upper)
    with contextlib.suppress(OSError):
        (session_dir / _RECORD).unlink()


def unmount(target: Path) -> None:
    """Detach the filesystem mounted on ``target``, if any (idempotent). A workspace
    overlay (``overlay_workspace``) is written back into its directory first: unmount
    it before the tmpfs that holds its upper layer."""
    with _overlays_lock:
        upper = _overlays.pop(str(Path(os.path.realpath(target))), None)
    if upper is not None:
        _release_overlay(Path(os.path.realpath(target)), upper)
        return
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
