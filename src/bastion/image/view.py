"""What a session needs of its image, in one object: ``open_view`` resolves the
reference (unpacking on first use), mounts the session's copy-on-write view, and
says how calls run in it (shell, environment, working directory) and how the
supervisor starts (the host's Python, see ``runtime.py``).

The session and the sandbox only hold an ``ImageView``; they know nothing of OCI,
overlays or id mappings.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SandboxUnavailable
from . import cache_for
from .cache import Image
from .errors import ImageUnsupported
from .overlay import Change, SessionOverlay
from .runtime import RUNTIME_DIR, SupervisorRuntime, host_runtime

__all__ = ["ImageView", "image_root_binds", "open_view", "policy_mounts"]

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ImageView:
    image: Image
    overlay: SessionOverlay
    root: Path  # the merged tree on the host (the sandbox binds it read-write)
    runtime: SupervisorRuntime
    shell: str  # inside path of bash, or sh
    env: dict[str, str] = field(default_factory=dict)  # the image's ENV, HOME and PATH
    cwd: str = "/"  # WORKDIR, or the policy's workspace when that is an image path

    def changes(self) -> list[Change]:
        return self.overlay.changes()

    def diff_fields(self) -> list[dict[str, object]]:
        """The episode-end diff as ``file.diff`` event fields, one per changed path
        (directories that only hold changed files are left out: their files say it)."""
        out: list[dict[str, object]] = []
        for change in self.overlay.changes():
            upper = self.overlay.upper / change.path.lstrip("/")
            size, digest = -1, ""
            if change.kind != "deleted":
                try:
                    st = os.lstat(upper)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if change.kind == "modified":
                        continue  # an opaque directory: its new content is listed
                    size = 0
                elif stat.S_ISREG(st.st_mode):
                    size = st.st_size
                    if size <= _HASH_LIMIT:
                        digest = _sha256(upper)
            out.append({"file.path": change.path,
                        "file.op": {"added": "create", "modified": "write",
                                    "deleted": "delete"}[change.kind],
                        "file.location": "image", "file.class": "", "file.size": size,
                        "file.sha256": digest})
        return out

    def close(self) -> None:
        self.overlay.close()


_HASH_LIMIT = 8 * 1024 * 1024


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def open_view(reference: str | os.PathLike[str], *, state_root: Path, session_dir: Path,
              host_uid: int, workspace: str | None = None, disk: int | None = None,
              inodes: int = 262_144, protected: tuple[str, ...] | list[str] = (),
              hidden: tuple[str, ...] | list[str] = ()) -> ImageView:
    """Resolve ``reference`` and mount its view for one session (undone on failure).
    ``disk``/``inodes`` limit what the session may write into the image."""
    image = cache_for(Path(state_root)).resolve(reference)
    for path in protected:
        _check_no_symlink(image, path)
    for path in hidden:
        _check_no_symlink(image, path, "hidden")
    if os.path.lexists(image.rootfs / RUNTIME_DIR.lstrip("/")):
        raise ImageUnsupported(f"image {image.reference} has {RUNTIME_DIR}, the path where "
                               "bastion brings in the supervisor's runtime")
    runtime = host_runtime()
    overlay = SessionOverlay(image, session_dir, host_uid, disk=disk, inodes=inodes)
    root = overlay.mount()
    try:
        shell = "/bin/bash" if _exists(root, "/bin/bash") else "/bin/sh"
        env = {"PATH": _DEFAULT_PATH, **image.config.env, "HOME": overlay.home}
        if workspace and workspace.startswith("/") and _exists(root, workspace):
            cwd = workspace  # `workspace: /testbed`: the agent's tree is in the image
        else:
            cwd = image.config.workdir or "/"
        return ImageView(image, overlay, root, runtime, shell, env, cwd)
    except BaseException:
        overlay.close()
        raise


def _check_no_symlink(image: Image, inside: str, what: str = "protected") -> None:
    """A protected path is bound by its host path, and a symlink there would be resolved
    on the *host*; a hidden one is skipped by the masks: refuse an image whose protected
    or hidden path goes through one."""
    if not inside.startswith("/"):
        return  # relative: inside /workspace, a host directory bastion made
    current = image.rootfs
    for part in [p for p in inside.split("/") if p]:
        current = current / part
        if current.is_symlink():
            raise ImageUnsupported(
                f"image {image.reference}: {what} path {inside} goes through a symlink "
                f"({'/' + str(current.relative_to(image.rootfs))} -> {os.readlink(current)}); "
                f"name the real path in sandbox.{what} instead")
        if not current.exists():
            return


def _exists(root: Path, inside: str) -> bool:
    """Whether a path exists in the image, resolving symlinks *inside* the image."""
    current = root
    parts = [p for p in inside.split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                return False
            target = os.readlink(candidate)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                current = root
            continue
        if part == "..":
            current = current.parent if current != root else root
            continue
        if not candidate.exists():
            return False
        current = candidate
    return True


# top-level trees of an image that a plain rootfs never shows (they would be the host's)
_IMAGE_OWN = ("root", "home", "var", "mnt", "media", "srv", "opt", "boot")


def image_root_binds(root: str) -> list[str]:
    """bwrap arguments that show an image's own /root, /home, /var (read-write: the
    session's overlay) where a plain rootfs shows nothing. Masks of the *host's* homes
    do not apply to them; the policy's protected paths still bind over them."""
    argv: list[str] = []
    for name in _IMAGE_OWN:
        full = os.path.join(root, name)
        if os.path.islink(full):
            argv += ["--symlink", os.readlink(full), f"/{name}"]
        elif os.path.isdir(full):
            argv += ["--bind", full, f"/{name}"]
    return argv


def policy_mounts(policy: object, state_dir: Path) -> list[str]:
    """bwrap arguments for ``sandbox.mounts`` (see policy/mounts.py). A source inside
    bastion's state directory (or containing it) is refused: the state directory is
    masked in every session, whatever the policy says. Protected paths win: a mount at
    or below one is read-only, and one inside an rw mount is bound read-only over it."""
    argv: list[str] = []
    state = os.path.realpath(state_dir)
    protected = [os.path.normpath(p) for p in getattr(policy, "protected", ())
                 if p.startswith("/")]
    for mount in getattr(policy, "mounts", ()):
        source = os.path.realpath(mount.source)
        if not os.path.isdir(source) and not os.path.isfile(source):
            raise SandboxUnavailable(f"sandbox.mounts: source {mount.source} does not exist")
        if (source == state or source.startswith(state + "/") or state.startswith(source + "/")
                or source == "/"):
            raise SandboxUnavailable(f"sandbox.mounts: {mount.source} would show bastion's "
                                     "state directory to the session")
        guarded = [p for p in protected if p != "" and
                   (mount.target == p or mount.target.startswith(p + "/"))]
        writable = mount.mode == "rw" and not guarded  # protected paths win over rw
        argv += ["--bind" if writable else "--ro-bind", source, mount.target]
        if writable:
            for path in protected:  # a protected path inside an rw mount stays read-only
                if path.startswith(mount.target + "/"):
                    below = os.path.join(source, os.path.relpath(path, mount.target))
                    if os.path.lexists(below):
                        argv += ["--ro-bind", below, path]
    return argv
