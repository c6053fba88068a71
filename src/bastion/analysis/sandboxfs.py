"""Reading a file as the sandbox sees it, from the host, before a command runs.

Command analysis judges a network client with the configuration it will use
(``~/.curlrc``, ``curl -K notes.cfg``, ``~/.wgetrc``, ``.git/config``), and that file may
have been written by code the analyser could not follow (a python one-liner that joins
the name from pieces). The session knows which host directories hold the sandbox's
writable trees (the workspace, ``/tmp``, ``/var/tmp``, ``/dev/shm``); this reader maps a
sandbox path onto them.

It never reaches a host file the sandbox cannot: components are opened one at a time
with ``O_NOFOLLOW``; a symbolic link is resolved again *as a sandbox path* (an agent's
``~/.curlrc -> /etc/bastion/key`` is read, if at all, as the sandbox's /etc, which is
not a writable tree and so not read). A FIFO, a device or a file past the size limit is
reported as present but unreadable (the caller decides; opening never blocks).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping
from pathlib import Path

__all__ = ["UNREADABLE", "SandboxFiles"]

MAX_BYTES = 256 * 1024
MAX_LINKS = 16


class _Unreadable(str):
    """The file exists but is not a regular file of judgeable size."""


UNREADABLE = _Unreadable("")


class SandboxFiles:
    """Sandbox path -> text, for the trees the sandbox can write (host_dirs maps a
    sandbox directory such as ``/workspace`` to the host directory holding it)."""

    def __init__(self, host_dirs: Mapping[str, Path | str], home: str = "/workspace",
                 cwd: str = "/workspace") -> None:
        self._dirs = sorted(((k.rstrip("/") or "/", str(v)) for k, v in host_dirs.items()),
                            key=lambda kv: len(kv[0]), reverse=True)
        self.home = home
        self.cwd = cwd

    def absolute(self, path: str) -> str:
        """A path as the sandbox's process would resolve it: ``~``/``$HOME`` is the
        home, a relative path is under the working directory."""
        for home in ("~/", "$HOME/", "${HOME}/"):
            if path.startswith(home):
                path = self.home + "/" + path[len(home):]
        if path in ("~", "$HOME"):
            path = self.home
        if not path.startswith("/"):
            path = self.cwd + "/" + path
        return posixpath.normpath(path)

    def __call__(self, path: str) -> str | None:
        """The file's text; None when absent (or outside the writable trees);
        ``UNREADABLE`` when it exists but cannot be judged (FIFO, device, too large)."""
        if not path or "\0" in path:
            return None
        current = self.absolute(path)
        for _ in range(MAX_LINKS):
            step = self._open(current)
            if not isinstance(step, tuple):
                return step
            kind, value = step
            if kind == "text":
                return value
            current = value  # a link: resolve its target as a sandbox path
        return UNREADABLE

    def _open(self, path: str) -> tuple[str, str] | str | None:
        for inside, host in self._dirs:
            if path != inside and not path.startswith(inside + "/"):
                continue
            parts = [p for p in path[len(inside):].split("/") if p]
            if not parts:
                return None
            try:
                fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    try:
                        st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        return None
                    if stat.S_ISLNK(st.st_mode):
                        target = os.readlink(part, dir_fd=fd)
                        here = inside + "/" + "/".join(parts[:i])
                        rest = "/".join(parts[i + 1:])
                        joined = posixpath.join(here if not target.startswith("/") else "/",
                                                target, rest)
                        return ("link", posixpath.normpath(joined))
                    if not last:
                        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                      | os.O_CLOEXEC, dir_fd=fd)
                        os.close(fd)
                        fd = nxt
                        continue
                    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
                        return UNREADABLE
                    leaf = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                                   | os.O_CLOEXEC, dir_fd=fd)
                    try:
                        if not stat.S_ISREG(os.fstat(leaf).st_mode):
                            return UNREADABLE
                        data = os.read(leaf, MAX_BYTES + 1)
                    finally:
                        os.close(leaf)
                    if len(data) > MAX_BYTES:
                        return UNREADABLE
                    return ("text", data.decode("utf-8", "replace"))
            except OSError:
                return None
            finally:
                os.close(fd)
        return None
