"""Executables a harness put into a sandbox itself, by exact path and content.

An evaluation harness sometimes installs its own tools inside the sandbox it gives the
agent: Inspect unpacks its `inspect-sandbox-tools` binary under
``/var/tmp/.da7be258e003d428/`` and runs it for the `text_editor` tool. Run from a
writable temp directory, such a program looks exactly like a dropped binary
(``download_exec.exec_from_tmp``). But the harness wrote it through bastion, so bastion
knows its bytes: ``Session.trust_executable(path, sha256)`` records that one file as
the harness's. An exec is marked ``proc.trusted`` only when the program run is at that
exact path **and** its content still has that digest, read from the running image
(``/proc/PID/exe``) or, once the process is gone, from the sandbox's own files without
following links. A directory is never trusted: anything else the agent runs from
there, and the harness's file once the agent has changed a byte of it, is judged as
before.

What this does not close: an agent that replaces the file, runs its own program, and
puts the original bytes back before bastion reads the file after the process exited
would be marked trusted for that exec. Only ``exec_from_tmp`` reads the mark; what the
program does (its connections, files, children) is judged as for any process.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path

__all__ = ["TrustedFiles"]

_CHUNK = 1 << 20
_MAX_SIZE = 512 << 20  # a harness tool is megabytes; a larger file is never hashed


class TrustedFiles:
    """The harness's executables of one session: sandbox path -> sha256 (hex).

    ``host_dirs`` maps a directory as the sandbox sees it (``/var/tmp``) to the host
    directory that holds it, for reading a file whose process has already exited."""

    def __init__(self, host_dirs: Mapping[str, Path] | None = None) -> None:
        self._files: dict[str, str] = {}
        self._host_dirs = dict(host_dirs or {})
        self._digests: dict[tuple[int, int, int, int, int], str] = {}  # stat key -> sha256
        self._lock = threading.Lock()

    def add(self, path: str, sha256: str) -> None:
        if not path.startswith("/") or "\0" in path:
            raise ValueError(f"a trusted file is an absolute sandbox path (got {path!r})")
        digest = sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"sha256 must be 64 hex digits (got {sha256!r})")
        with self._lock:
            self._files[os.path.normpath(path)] = digest

    @property
    def host_dirs(self) -> dict[str, Path]:
        """Sandbox directory -> the host directory that holds it (the writable trees)."""
        return dict(self._host_dirs)

    def __bool__(self) -> bool:
        return bool(self._files)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path in self._files

    def items(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._files.items())

    def matches(self, exe: str, pid: int | None) -> bool:
        """Whether the program ``pid`` runs from ``exe`` is the trusted file, unchanged."""
        with self._lock:
            expected = self._files.get(exe)
        if expected is None:
            return False
        digest = self._running_image(exe, pid) if pid else None
        if digest is None:
            digest = self._sandbox_file(exe)
        return digest == expected

    # -- reading ---------------------------------------------------------------------------

    def _running_image(self, exe: str, pid: int) -> str | None:
        """The digest of the image ``pid`` runs, if it still runs ``exe``."""
        try:
            fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            # after the open: the fd is the image the process ran when the link said so
            link = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
            if link != exe:
                return None
            return self._digest(fd)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _sandbox_file(self, exe: str) -> str | None:
        """The digest of the file at ``exe`` in the sandbox's own directories, walked
        one component at a time without following a link (an agent's symlink never
        reaches a host file)."""
        for inside, host in self._host_dirs.items():
            prefix = inside.rstrip("/") + "/"
            if not exe.startswith(prefix):
                continue
            parts = exe[len(prefix):].split("/")
            if any(p in ("", ".", "..") for p in parts):
                return None
            try:
                fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return None
            try:
                for part in parts[:-1]:
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = nxt
                leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                               | os.O_CLOEXEC, dir_fd=fd)
                try:
                    return self._digest(leaf)
                finally:
                    os.close(leaf)
            except OSError:
                return None
            finally:
                os.close(fd)
        return None

    def _digest(self, fd: int) -> str | None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_SIZE:
            return None  # not a regular file, or too large to be a harness tool
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._digests.get(key)
        if hit is not None:
            return hit
        h = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            if len(self._digests) > 256:
                self._digests.clear()
            self._digests[key] = digest
        return digest
