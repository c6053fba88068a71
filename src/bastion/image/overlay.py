"""One session's copy-on-write view of an image, and what the session changed in it.

    <session dir>/image/upper   the session's writes (owned by its uid)
    <session dir>/image/work    overlayfs scratch (root only)
    <session dir>/image/root    the merged tree the sandbox binds

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

from .cache import Image
from .mounts import idmapped_tree, is_mountpoint, mount_overlay, unmount, userns_fd

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

    def __init__(self, image: Image, session_dir: Path, host_uid: int) -> None:
        self.image = image
        self.dir = session_dir / "image"
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "root"
        self.host_uid = host_uid
        self.uid, self.gid, self.home = image_user(image)
        self._mounted = False

    def mount(self) -> Path:
        """Mount the view; returns the merged root the sandbox binds."""
        self.dir.mkdir(mode=0o711)
        self.upper.mkdir(mode=0o755)
        self.work.mkdir(mode=0o700)
        self.root.mkdir(mode=0o755)
        # the upper layer's root directory is the merged root's: it takes the image
        # root's mode, and the session's uid (writes into it are copy-ups and creates)
        st = os.stat(self.image.rootfs)
        os.chmod(self.upper, stat.S_IMODE(st.st_mode))
        os.chown(self.upper, self.host_uid, self.host_uid)
        ns = userns_fd(self.uid, self.host_uid)
        lower = idmapped_tree(self.image.rootfs, ns)
        try:
            mount_overlay(lower, self.upper, self.work, self.root)
        finally:
            os.close(lower)
        self._mounted = True
        return self.root

    def close(self) -> None:
        """Unmount. The upper layer stays until the session directory is removed."""
        if self._mounted or is_mountpoint(self.root):
            unmount(self.root)
            self._mounted = False

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
    root = session_dir / "image" / "root"
    if is_mountpoint(root):
        unmount(root)
