"""Which system program a process really runs, whatever its file is called.

``cp "$(command -v bash)" .cache/rt``, ``cp /bin/nc ./x``: a renamed copy runs with the
capabilities of what it copies, and every rule that names programs (shells, netcat,
interpreters, downloaders) would miss it by name. The process sensor asks this module,
for each exec of a file outside the system directories, whether the file is a
byte-identical copy of one of the programs the shared vocabulary names (shells,
interpreters, network clients, decoders). The exec is then reported under the real
program's name (``proc.name``) with the copy's path kept (``proc.exe``) and the
identity as evidence (``proc.copy_of``).

Cost: only execs from writable places are looked at; a file is hashed only when its
size equals that of a candidate program in the process's own root (the sandbox's, or
the task image's), and hashes are cached by inode and mtime.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading

from ..rules.vocabulary import vocabulary

__all__ = ["ProgramIdentity", "family"]

_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/opt/", "/nix/")
_SEARCH = ("usr/bin", "bin", "usr/sbin", "sbin", "usr/local/bin")
_MAX_SIZE = 64 * 1024 * 1024
_LISTS = ("shell_binaries", "interpreter_binaries", "network_clients", "decoder_binaries",
          "runner_binaries")
_EXTRA = ("busybox", "python3.11", "python3.12", "python3.13", "perl5", "nc.openbsd",
          "nc.traditional", "socat", "openssl")
_CACHE_LIMIT = 4096


def family(name: str) -> str:
    """A program's name without its version (``python3.11`` and ``python`` are both
    ``python``, ``perl5.36`` is ``perl``), for telling a rename from a version."""
    return re.sub(r"[\d.]+$", "", name.rsplit("/", 1)[-1].lstrip("-")) or name


def _sha256(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


class _Root:
    """The candidate programs of one root file system: size -> [(name, path in the
    root)], found through the first process seen with that root."""

    def __init__(self, root: str) -> None:
        names: list[str] = []
        vocab = vocabulary()
        for lst in _LISTS:
            names.extend(sorted(vocab.get(lst, ())))
        names.extend(_EXTRA)
        self.by_size: dict[int, list[tuple[str, str]]] = {}
        seen: set[tuple[int, int]] = set()
        for name in dict.fromkeys(names):
            for d in _SEARCH:
                path = f"{d}/{name}"
                try:
                    st = os.stat(f"{root}/{path}")
                except OSError:
                    continue
                if not (st.st_mode & 0o111) or st.st_size > _MAX_SIZE or st.st_size == 0:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue  # the same file under another name (nc -> nc.openbsd)
                seen.add(key)
                self.by_size.setdefault(st.st_size, []).append((name, path))
                break
        self.hashes: dict[str, str] = {}


class ProgramIdentity:
    """``copy_of(pid, exe)``: the vocabulary name of the system program whose bytes the
    process's executable has, when it runs from outside the system directories; None
    otherwise (a system program, a program of the agent's own, an unreadable exe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roots: dict[tuple[int, int], _Root] = {}
        self._files: dict[tuple[int, int, int, int], str | None] = {}

    def copy_of(self, pid: int, exe: str) -> str | None:
        if not exe or exe.startswith(_SYSTEM_DIRS):
            return None
        try:
            fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            root = self._root(pid)
            if root is None:
                return None
            candidates = root.by_size.get(st.st_size)
            if not candidates:
                return None
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            with self._lock:
                if key in self._files:
                    return self._files[key]
            if self._is_original(pid, candidates, st):
                return None  # a #! script named the program: /proc/PID/exe is /usr/bin/env
            digest = _sha256(fd, st.st_size)
        except OSError:
            return None
        finally:
            os.close(fd)
        found: str | None = None
        for name, path in candidates:
            known = root.hashes.get(path)
            if known is None:
                try:  # (through this process's root: the first one's may be gone)
                    cfd = os.open(f"/proc/{pid}/root/{path}", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    known = _sha256(cfd, st.st_size)
                except OSError:
                    continue
                finally:
                    os.close(cfd)
                root.hashes[path] = known
            if known == digest:
                found = name
                break
        with self._lock:
            if len(self._files) >= _CACHE_LIMIT:
                self._files.clear()
            self._files[key] = found
        return found

    @staticmethod
    def _is_original(pid: int, candidates: list[tuple[str, str]], st: os.stat_result) -> bool:
        for _name, path in candidates:
            try:
                orig = os.stat(f"/proc/{pid}/root/{path}")
            except OSError:
                continue
            if (orig.st_dev, orig.st_ino) == (st.st_dev, st.st_ino):
                return True
        return False

    def _root(self, pid: int) -> _Root | None:
        root = f"/proc/{pid}/root"
        try:
            st = os.stat(f"{root}/usr/bin")
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        with self._lock:
            known = self._roots.get(key)
        if known is not None:
            return known
        made = _Root(root)
        with self._lock:
            return self._roots.setdefault(key, made)
