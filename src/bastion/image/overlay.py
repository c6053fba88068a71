"""One session's copy-on-write view of an image, and what the session changed in it.

    <session dir>/image/layer         a tmpfs of the session's disk limit, holding
    <session dir>/image/layer/upper   the session's writes (owned by its uid)
    <session dir>/image/layer/work    overlayfs scratch (root only)
    <session dir>/image/root          the merged tree the sandbox binds

The upper layer sits on a size- and inode-limited tmpfs (like the workspace and /tmp,
see sandbox/scratch.py): the kernel refuses writes past the disk limit with ENOSPC,
the pages count against the session's memory, and the host's disk holds none of it.

The upper layer *is* the episode's diff: every file the agent created or modified is
there, every deletion is a whiteout (a 0:0 character device) and every replaced
directory is marked opaque. Nothing reaches the shared image tree; closing unmounts
the view and the upper layer goes with the session directory (or to quarantine).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .cache import Image, hold_entry
from .mounts import idmapped_tree, is_mountpoint, mount_overlay, mount_tmpfs, unmount, userns_fd

__all__ = ["Change", "SessionOverlay", "image_user"]

_OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(frozen=True)
class Change:
    path: str  # inside the image, absolute
    kind: str  # "added" | "modified" | "deleted"


def image_user(image: Image) -> tuple[int, int, str]:
    """(uid, gid, home) of the image's USER, read from the image's own /etc/passwd."""
    spec = image.config.user or "0"
    user, _, group = spec.partition(":")
    entries: dict[str, tuple[int, int, str]] = {}
    with contextlib.suppress(OSError):
        for line in (image.rootfs / "etc" / "passwd").read_text(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) >= 7 and parts[2].isdigit() and parts[3].isdigit():
                entries[parts[0]] = (int(parts[2]), int(parts[3]), parts[5])
    if user.isdigit():
        uid = int(user)
        match = next((e for e in entries.values() if e[0] == uid), None)
        gid, home = (match[1], match[2]) if match else (uid, "/root" if uid == 0 else "/")
    elif user in entries:
        uid, gid, home = entries[user]
    else:
        from .errors import ImageUnsupported

        raise ImageUnsupported(f"image {image.reference}: USER {user!r} is not in its "
                               "/etc/passwd")
    if group.isdigit():
        gid = int(group)
    return uid, gid, home or "/"


class SessionOverlay:
    """The mounted, writable view of an image for one session."""

    def __init__(self, image: Image, session_dir: Path, host_uid: int, *,
                 disk: int | None = None, inodes: int = 262_144) -> None:
        self.image = image
        self.dir = session_dir / "image"
        self.layer = self.dir / "layer"
        self.upper = self.layer / "upper"
        self.work = self.layer / "work"
        self.root = self.dir / "root"
        self.host_uid = host_uid
        self.disk = disk  # bytes the upper layer may hold; None: no limit (host disk)
        self.inodes = inodes
        self.uid, self.gid, self.home = image_user(image)
        self._mounted = False
        self._hold = -1  # shared lock on the image's cache entry while mounted

    def mount(self) -> Path:
        """Mount the view; returns the merged root the sandbox binds."""
        self.dir.mkdir(mode=0o711)
        self.layer.mkdir(mode=0o711)
        if self.disk is not None:
            mount_tmpfs(self.layer, size=self.disk, inodes=self.inodes)
        self.upper.mkdir(mode=0o755)
        self.work.mkdir(mode=0o700)
        self.root.mkdir(mode=0o755)
        # the upper layer's root directory is the merged root's: it takes the image
        # root's mode, and the session's uid (writes into it are copy-ups and creates)
        st = os.stat(self.image.rootfs)
        os.chmod(self.upper, stat.S_IMODE(st.st_mode))
        os.chown(self.upper, self.host_uid, self.host_uid)
        self._mounted = True  # from here on, close() has something to undo
        # while mounted, the cache entry is in use: ImageCache.prune leaves it alone
        self._hold = hold_entry(self.image)
        ns = userns_fd(self.uid, self.gid, self.host_uid)
        try:
            lower = idmapped_tree(self.image.rootfs, ns)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(ns)  # the mount keeps the mapping; the namespace is no longer needed
        try:
            mount_overlay(lower, self.upper, self.work, self.root)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(lower)
        return self.root

    def close(self) -> None:
        """Unmount the view, then the upper layer's tmpfs (its content goes with it)."""
        if self._mounted:
            for target in (self.root, self.layer):
                if is_mountpoint(target):
                    unmount(target)
            self._mounted = False
        if self._hold >= 0:
            os.close(self._hold)
            self._hold = -1

    def changes(self) -> list[Change]:
        """What the session changed in the image, from its upper layer."""
        found: list[Change] = []
        lower = self.image.rootfs
        for dirpath, dirnames, filenames in os.walk(self.upper):
            rel_dir = os.path.relpath(dirpath, self.upper)
            for name in sorted([*dirnames, *filenames]):
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join("/", rel_dir, name))
                st = os.lstat(full)
                below = os.path.lexists(os.path.join(lower, rel.lstrip("/")))
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    found.append(Change(rel, "deleted"))
                elif stat.S_ISDIR(st.st_mode):
                    opaque = False
                    with contextlib.suppress(OSError):
                        opaque = os.getxattr(full, _OPAQUE_XATTR, follow_symlinks=False) == b"y"
                    if not below or opaque:
                        found.append(Change(rel, "added" if not below else "modified"))
                else:
                    found.append(Change(rel, "modified" if below else "added"))
        return sorted(found, key=lambda c: c.path)


def remove_orphan_mount(session_dir: Path) -> None:
    """Detach a dead session's image view so its directory can be removed."""
    for target in (session_dir / "image" / "root", session_dir / "image" / "layer"):
        if is_mountpoint(target):
            unmount(target)
