"""Network namespaces and nftables, in-process and per thread.

Creating a session's namespace must cost a few milliseconds, so nothing here forks:
the calling *thread* unshares or joins a namespace (network namespaces are per thread),
nftables rules are loaded through libnftables in the same thread, and pyroute2 netlink
sockets opened while inside a namespace stay bound to it. ``inside(path)`` always
returns the thread to where it was, or raises.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import SandboxUnavailable

__all__ = ["NETNS_DIR", "Nft", "create_netns", "forget", "inside", "netns_exists", "remove_netns"]

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_netns_lock = threading.Lock()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, _CLONE_NEWNET), "setns")


_fd_cache: dict[str, int] = {}  # path -> open fd, for namespaces entered per connection
_home_cache = threading.local()


@contextlib.contextmanager
def inside(path: str | os.PathLike[str], *, cache: bool = False) -> Iterator[None]:
    """Run the body with the calling thread in the network namespace at ``path``.

    ``cache=True`` keeps the namespace (and this thread's own) open between calls: for
    long-lived namespaces entered on every connection (the lab, the host), it saves
    four system calls per entry. Never use it for session namespaces: an open fd keeps
    a namespace alive after it is removed.
    """
    if cache:
        home = getattr(_home_cache, "fd", None)
        if home is None:
            home = _home_cache.fd = os.open("/proc/thread-self/ns/net",
                                            os.O_RDONLY | os.O_CLOEXEC)
        key = os.fspath(path)
        target = _fd_cache.get(key)
        # one stat checks the name still means the same namespace (a lab taken down and
        # brought up again, perhaps by another process, is a new namespace)
        if target is None or os.fstat(target).st_ino != os.stat(key).st_ino:
            forget(key)
            target = _fd_cache[key] = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)  # if this fails the thread is lost: let it raise
    finally:
        os.close(home)


def forget(path: str | os.PathLike[str]) -> None:
    """Drop a cached namespace fd (when the namespace is removed, e.g. ``lab down``)."""
    fd = _fd_cache.pop(os.fspath(path), None)
    if fd is not None:
        os.close(fd)


def _ensure_netns_dir() -> None:
    """Make /run/netns a shared mount point, as ``ip netns add`` does, once."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    with open("/proc/self/mountinfo") as info:
        if any(line.split()[4] == str(NETNS_DIR) for line in info):
            return
    _check(_libc.mount(str(NETNS_DIR).encode(), str(NETNS_DIR).encode(), b"none",
                       _MS_BIND | 16384, None), "bind /run/netns")  # MS_REC
    _check(_libc.mount(b"none", str(NETNS_DIR).encode(), None, 1 << 20 | 16384, None),
           "make /run/netns shared")  # MS_SHARED | MS_REC


def create_netns(name: str) -> str:
    """Create a named network namespace (like ``ip netns add``) and return its path."""
    with _netns_lock:
        _ensure_netns_dir()
    path = NETNS_DIR / name
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _check(_libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none",
                               _MS_BIND, None), "bind netns")
        finally:
            _setns(home)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    finally:
        os.close(home)
    return str(path)


def remove_netns(name_or_path: str) -> None:
    """Unmount and delete a named namespace; the kernel frees it once nothing uses it."""
    path = Path(name_or_path) if "/" in name_or_path else NETNS_DIR / name_or_path
    forget(str(path))
    if not path.exists():
        return
    _libc.umount2(str(path).encode(), _MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


class Nft:
    """libnftables in this process: a ruleset batch or a query in the *current thread's*
    network namespace, without forking ``nft``."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            self._lib = ctypes.CDLL(name)
        except OSError as exc:
            raise SandboxUnavailable(f"libnftables is not installed ({exc}); "
                                     "install the nftables package") from exc
        lib = self._lib
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        self._lock = threading.Lock()

    def run(self, commands: str, *, json_output: bool = False) -> str:
        """Run an nft script atomically in the calling thread's namespace."""
        if _lowest_free_fd() >= _FD_SETSIZE_MARGIN:
            return _run_nft_binary(commands, json_output=json_output)
        lib = self._lib
        with self._lock:
            ctx = lib.nft_ctx_new(0)
            if not ctx:
                raise SandboxUnavailable("nft_ctx_new failed")
            try:
                lib.nft_ctx_buffer_output(ctx)
                lib.nft_ctx_buffer_error(ctx)
                if json_output:
                    lib.nft_ctx_output_set_flags(ctx, 1 << 4)  # NFT_CTX_OUTPUT_JSON
                rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
                out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
                err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
            finally:
                lib.nft_ctx_free(ctx)
        if rc != 0:
            raise OSError(f"nft failed: {err.strip() or 'unknown error'}")
        return out

    def counters(self, family: str, table: str) -> dict[str, tuple[int, int]]:
        """Named counters of one table: name -> (packets, bytes)."""
        data: dict[str, Any] = json.loads(
            self.run(f"list counters table {family} {table}", json_output=True) or "{}")
        out: dict[str, tuple[int, int]] = {}
        for item in data.get("nftables", []):
            counter = item.get("counter")
            if counter:
                out[counter["name"]] = (int(counter["packets"]), int(counter["bytes"]))
        return out


# libnftables talks to the kernel through select(2), which aborts the whole process
# for a descriptor numbered 1024 or more. A process holding many sessions has such
# numbers, and then the nft binary (a fresh, small fd table) does the same work.
_FD_SETSIZE_MARGIN = 960


def _lowest_free_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd


def _run_nft_binary(commands: str, *, json_output: bool) -> str:
    # forked from this thread, the child starts in this thread's network namespace
    argv = ["nft", *(["-j"] if json_output else []), "-f", "-"]
    proc = subprocess.run(argv, input=commands, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"nft failed: {proc.stderr.strip() or 'unknown error'}")
    return proc.stdout


_nft: Nft | None = None


def nft() -> Nft:
    """The process's libnftables handle."""
    global _nft
    if _nft is None:
        _nft = Nft()
    return _nft
