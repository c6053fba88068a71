"""Every exec of every sandbox, with the argv it was asked with, however short-lived.

The process sensor learns of an exec from the kernel's process connector and then
reads ``/proc/<pid>/cmdline``. A process that exits within a millisecond (a refused
``cat /etc/shadow``) or that execs again (dash runs the last command of ``sh -c "a; b"``
in place) is gone or changed by then. So each sandbox's supervisor installs, before it
starts any call, a second seccomp filter whose one action is ``SECCOMP_RET_USER_NOTIF``
for ``execve`` and ``execveat``, and hands the listener fd to the host
(``supervisor.py``, ``Sandbox._take_listener``). Here, one host thread polls every
sandbox's listener: it receives the notification (the caller is stopped in the
syscall), reads the filename and argv from the caller's memory (``/proc/<pid>/mem``,
bounded by ``MAX_ARGV_BYTES``), checks the notification is still valid (the caller did
not die and its pid was not reused meanwhile), records ``(pid, time of receipt,
filename, argv)`` and lets the syscall continue (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``).
It never waits for the engine: the table is read later by the process sensor
(``lookup``), which pairs an exec event at kernel time ``ts`` with the latest record
of that pid received before ``ts`` (a later exec of the same pid can only be notified
after this one completed).

What this is not: a security boundary by itself. The argv is read from the caller's
memory while the caller waits, so another thread of the caller (or a process sharing
its memory) can change it between the read and the kernel's own copy; the sensor
therefore keeps reading /proc as well and records both when they differ. Nothing is
refused here: verdict semantics are unchanged (see README, "Process sensor").

Fail closed: every exec of every session waits for this thread. If it dies, or one
notification takes longer than ``STUCK_AFTER`` (a watchdog thread checks), every
registered sandbox is told (``on_fail``) and ends, and no new sandbox may register.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

__all__ = [
    "MAX_ARGV_BYTES",
    "ExecNotifier",
    "ExecRecord",
    "available",
    "listener_fd_ok",
    "notifier",
]

# the analyser's budget (analysis.analyzer.MAX_ARGV; a test keeps them equal): more
# than the kernel accepts for argv and environment together, so in practice all of it
MAX_ARGV_BYTES = 4 * 1024 * 1024
MAX_ARGS = 65536
STUCK_AFTER = 30.0  # seconds one notification may take before every session is ended
# (generous: a host so loaded that the thread waits that long is not a reason to end
# honest episodes; a notifier that never answers is)
RETAIN_NS = 120 * 10**9  # how long a record waits for the sensor (its lag is seconds)
MAX_RECORDS_PER_PID = 16
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # argv bytes held for all sessions together
MAX_RECORDS = 200_000  # records held for all sessions together

# <linux/seccomp.h>
_NOTIF_SIZE = 80  # struct seccomp_notif
_RECV = 0xC0502100  # SECCOMP_IOCTL_NOTIF_RECV  _IOWR('!', 0, struct seccomp_notif)
_SEND = 0xC0182101  # SECCOMP_IOCTL_NOTIF_SEND  _IOWR('!', 1, struct seccomp_notif_resp)
_ID_VALID = 0x40082102  # SECCOMP_IOCTL_NOTIF_ID_VALID  _IOW('!', 2, __u64)
_FLAG_CONTINUE = 1
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ExecRecord:
    """One exec as the caller asked for it (the syscall may still have failed)."""

    tgid: int
    recv_ns: int  # time.monotonic_ns() when the notification was received
    filename: str  # as given, made absolute when it could be (a memfd: /memfd:NAME)
    argv: tuple[str, ...]
    truncated: bool  # past MAX_ARGV_BYTES / MAX_ARGS, or unreadable memory

    @property
    def size(self) -> int:
        return sum(len(a) + 1 for a in self.argv) + len(self.filename)


@cache
def available() -> str | None:
    """None if this kernel can notify a listener of a syscall, else why not."""
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError as exc:
        return f"seccomp actions cannot be read ({exc.strerror})"
    if "user_notif" not in actions:
        return "this kernel has no seccomp user notification (SECCOMP_RET_USER_NOTIF)"
    return None


def listener_fd_ok(fd: int) -> bool:
    """Whether ``fd`` really is a seccomp listener (what the supervisor sent)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:seccomp notify"
    except OSError:
        return False


class _Pid:
    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: deque[ExecRecord] = deque(maxlen=MAX_RECORDS_PER_PID)


class ExecNotifier:
    """One thread answering every sandbox's exec notifications (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[int, Callable[[str], None]] = {}  # listener fd -> on_fail
        self._closing: list[int] = []  # unregistered, for the thread to close
        self._table: dict[int, _Pid] = {}
        self._order: deque[ExecRecord] = deque()  # every record, oldest first
        self._bytes = 0
        self.broken: str | None = None
        self.handled = 0
        self.cpu_ns = 0  # this thread's CPU time spent answering (benchmarks/bench_exec.py)
        self._busy_since = 0  # monotonic ns when the current notification was received
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._thread = threading.Thread(target=self._guarded, name="bastion-exec-notify",
                                        daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="bastion-exec-watchdog",
                                          daemon=True)
        self._watchdog.start()

    # -- sandboxes ------------------------------------------------------------------------

    def register(self, fd: int, on_fail: Callable[[str], None]) -> None:
        """Answer the notifications of listener ``fd``, which this notifier now owns
        (closed by ``unregister``); ``on_fail(reason)`` once if this notifier fails."""
        with self._lock:
            if self.broken:
                os.close(fd)
                raise OSError(errno.EIO, f"the exec notifier has failed: {self.broken}")
            self._fds[fd] = on_fail
            self._epoll.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        """Stop answering ``fd`` and close it. The thread closes it itself, between two
        notifications, so that it never answers on a number already reused."""
        with self._lock:
            if self._fds.pop(fd, None) is None:
                return
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
            if self.broken is None and self._thread.is_alive():
                self._closing.append(fd)
                fd = -1
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # -- the table, for the process sensor --------------------------------------------------

    def lookup(self, tgid: int, before_ns: int, after_ns: int = 0) -> tuple[ExecRecord | None, bool]:
        """The latest record of ``tgid`` received before ``before_ns`` (the kernel's
        time of an exec event) and not before ``after_ns`` (when the consumer saw this
        process forked: older records are an earlier process's under the same pid), and
        whether a later one exists (a later exec began: what /proc shows now may be that
        one's). Records are not taken away by a lookup: several sensors (one per host)
        read the same table, each at its own pace; age and size bound it."""
        with self._lock:
            entry = self._table.get(tgid)
            if entry is None:
                return None, False
            found = None
            later = False
            for rec in entry.records:
                if rec.recv_ns < after_ns:
                    continue
                if rec.recv_ns < before_ns:
                    found = rec
                else:
                    later = True
            return found, later

    def forget(self, tgid: int, before_ns: int, *, keep_last: bool = False) -> None:
        """Drop ``tgid``'s records received before ``before_ns``: at a fork that makes a
        new process with this pid they belong to an older one. At an exit, with
        ``keep_last``: an exec from a non-leader thread reports the old leader's exit
        *before* its own exec event, which still needs the latest record."""
        with self._lock:
            entry = self._table.get(tgid)
            if entry is None:
                return
            keep = 1 if keep_last else 0
            while len(entry.records) > keep and entry.records[0].recv_ns < before_ns:
                entry.records.popleft()
            if not entry.records:
                del self._table[tgid]

    def _record(self, rec: ExecRecord) -> None:
        with self._lock:
            entry = self._table.get(rec.tgid)
            if entry is None:
                entry = self._table[rec.tgid] = _Pid()
            entry.records.append(rec)  # the deque drops the pid's oldest past its bound
            self._order.append(rec)
            self._bytes += rec.size
            horizon = rec.recv_ns - RETAIN_NS
            while self._order and (self._order[0].recv_ns < horizon
                                   or self._bytes > MAX_TOTAL_BYTES
                                   or len(self._order) > MAX_RECORDS):
                old = self._order.popleft()
                self._bytes -= old.size
                held = self._table.get(old.tgid)
                if held is not None and held.records and held.records[0] is old:
                    held.records.popleft()
                    if not held.records:
                        del self._table[old.tgid]

    # -- the thread -------------------------------------------------------------------------

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                raise

    def _fail(self, reason: str) -> None:
        # without the lock: the thread may be stuck holding it
        if self.broken:
            return
        self.broken = reason
        failing = list(self._fds.values())
        for on_fail in failing:
            with contextlib.suppress(Exception):
                on_fail(f"the exec notifier failed ({reason})")

    def _watch(self) -> None:
        while self.broken is None:
            time.sleep(min(1.0, STUCK_AFTER / 4))
            since = self._busy_since
            if since and time.monotonic_ns() - since > STUCK_AFTER * 1e9:
                self._fail(f"one exec notification was not answered within {STUCK_AFTER:g} s")

    def _run(self) -> None:
        buf = bytearray(_NOTIF_SIZE)
        while self.broken is None:
            with self._lock:
                closing, self._closing = self._closing, []
            for fd in closing:
                os.close(fd)
            try:
                ready = self._epoll.poll(1.0)
            except InterruptedError:
                continue
            for fd, mask in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                # from here to the answer an exec may be waiting: the watchdog times it
                self._busy_since = time.monotonic_ns()
                with self._lock:
                    if fd not in self._fds or fd in self._closing:
                        continue  # unregistered meanwhile
                    if not mask & select.EPOLLIN:
                        # EPOLLHUP: no task uses the filter any more (the sandbox is
                        # gone); stop polling it until its owner unregisters it
                        with contextlib.suppress(OSError):
                            self._epoll.unregister(fd)
                        continue
                self._answer(fd, buf)
            self._busy_since = 0

    def _answer(self, fd: int, buf: bytearray) -> None:
        buf[:] = bytes(_NOTIF_SIZE)  # the kernel wants it zeroed
        try:
            fcntl.ioctl(fd, _RECV, buf)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                return  # the caller was killed before we took it
            if exc.errno in (errno.EBADF, errno.ENOTTY, errno.EINVAL):
                with self._lock:  # not (or no longer) a listener: never poll it again
                    if self._fds.pop(fd, None) is not None:
                        with contextlib.suppress(OSError):
                            self._epoll.unregister(fd)
                        self._closing.append(fd)
                return
            raise
        recv_ns = time.monotonic_ns()
        cpu = time.thread_time_ns()
        try:
            notif_id, tid, _flags, nr, _arch = struct.unpack_from("=QIIiI", buf)
            args = struct.unpack_from("=6Q", buf, 32)
            rec = _read_exec(tid, nr, args, recv_ns)
            # the memory read above is only the caller's if it is still waiting
            try:
                fcntl.ioctl(fd, _ID_VALID, struct.pack("=Q", notif_id))
            except OSError:
                return  # died meanwhile: nothing was executed, nothing to answer
            if rec is not None:
                self._record(rec)
            self.handled += 1
            with contextlib.suppress(OSError):  # ENOENT: killed since ID_VALID
                fcntl.ioctl(fd, _SEND, struct.pack("=QqiI", notif_id, 0, 0, _FLAG_CONTINUE))
        finally:
            self._busy_since = time.monotonic_ns()  # the next one (if any) from now
            self.cpu_ns += time.thread_time_ns() - cpu


@cache
def _execveat_nr() -> int:
    try:
        import pyseccomp

        return int(pyseccomp.resolve_syscall(pyseccomp.system_arch(), "execveat"))
    except Exception:  # noqa: BLE001 - no libseccomp: no sandbox either
        return -1


def _tgid(tid: int) -> int:
    # a single-threaded caller (nearly every exec) is its own thread group: listing
    # its task/ costs a tenth of generating /proc/PID/status
    with contextlib.suppress(OSError):
        if os.listdir(f"/proc/{tid}/task") == [str(tid)]:
            return tid
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            head = f.read(512)
    except OSError:
        return tid
    start = head.find(b"\nTgid:")
    if start < 0:
        return tid
    with contextlib.suppress(ValueError, IndexError):
        return int(head[start + 6:].split(None, 1)[0])
    return tid


def _read_exec(tid: int, nr: int, args: tuple[int, ...], recv_ns: int) -> ExecRecord | None:
    if nr == _execveat_nr():
        dirfd, path_ptr, argv_ptr, flags = args[0], args[1], args[2], args[4]
        dirfd = dirfd - (1 << 32) if dirfd & 0x80000000 and dirfd < (1 << 32) else dirfd
        dirfd = dirfd - (1 << 64) if dirfd >= (1 << 63) else dirfd
    else:
        dirfd, path_ptr, argv_ptr, flags = _AT_FDCWD, args[0], args[1], 0
    try:
        mem = os.open(f"/proc/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        filename, short = _string(mem, path_ptr, 4096)
        argv, truncated = _argv(mem, argv_ptr)
    finally:
        os.close(mem)
    if not filename.startswith("/"):
        # relative to a directory fd (a memfd with AT_EMPTY_PATH: fexecve) or the cwd
        base = None
        with contextlib.suppress(OSError):
            base = os.readlink(f"/proc/{tid}/cwd" if dirfd == _AT_FDCWD
                               else f"/proc/{tid}/fd/{dirfd}")
        if base is not None:
            if not filename and flags & _AT_EMPTY_PATH:
                filename = base.removesuffix(" (deleted)")  # as /proc/PID/exe shows it
            elif filename:
                filename = base.rstrip("/") + "/" + filename
    if not filename and not argv:
        # nothing could be read (the memory went away under the read): an empty record
        # would hide what /proc still shows of this exec, so there is none
        return None
    return ExecRecord(_tgid(tid), recv_ns, filename, argv, truncated or short)


def _string(mem: int, addr: int, budget: int) -> tuple[str, bool]:
    """The NUL-terminated string at ``addr``, at most ``budget`` bytes (and whether it
    was cut short)."""
    if not addr:
        return "", False
    parts: list[bytes] = []
    size = 256
    got = 0
    while got < budget:
        # never read across a page the first time: a short string at the end of a
        # mapping followed by a hole would otherwise fail as a whole
        want = min(size, budget - got, _PAGE - (addr % _PAGE) if not parts else size)
        try:
            chunk = os.pread(mem, want, addr)
        except OSError:
            return b"".join(parts).decode(errors="replace"), True
        if not chunk:
            return b"".join(parts).decode(errors="replace"), True
        end = chunk.find(b"\0")
        if end >= 0:
            parts.append(chunk[:end])
            return b"".join(parts).decode(errors="replace"), False
        parts.append(chunk)
        got += len(chunk)
        addr += len(chunk)
        size = 65536
    return b"".join(parts).decode(errors="replace"), True


def _argv(mem: int, addr: int) -> tuple[tuple[str, ...], bool]:
    if not addr:
        return (), False
    pointers: list[int] = []
    while len(pointers) < MAX_ARGS:
        want = min(512, _PAGE - (addr % _PAGE))
        try:
            chunk = os.pread(mem, want, addr)
        except OSError:
            return _strings(mem, pointers)[0], True
        count = len(chunk) // 8
        if not count:
            return _strings(mem, pointers)[0], True
        done = False
        for ptr in struct.unpack_from(f"={count}Q", chunk):
            if ptr == 0:
                done = True
                break
            pointers.append(ptr)
        if done:
            return _strings(mem, pointers)
        addr += count * 8
    strings, _ = _strings(mem, pointers)
    return strings, True


def _strings(mem: int, pointers: list[int]) -> tuple[tuple[str, ...], bool]:
    if pointers:
        # the strings usually lie together (the caller's stack or one buffer): one read
        # of the span instead of one per argument
        low, high = min(pointers), max(pointers)
        if high - low < 256 * 1024:
            try:
                block = os.pread(mem, high - low + 4096, low)
            except OSError:
                block = b""
            out: list[str] = []
            for ptr in pointers:
                start = ptr - low
                end = block.find(b"\0", start)
                if end < 0:
                    break
                out.append(block[start:end].decode(errors="replace"))
            else:
                if sum(len(a) + 1 for a in out) <= MAX_ARGV_BYTES:
                    return tuple(out), False
    out = []
    left = MAX_ARGV_BYTES
    for ptr in pointers:
        if left <= 0:
            return tuple(out), True
        text, short = _string(mem, ptr, left)
        out.append(text)
        if short:
            return tuple(out), True
        left -= len(text) + 1
    return tuple(out), False


_notifier: ExecNotifier | None = None
_notifier_lock = threading.Lock()


def notifier() -> ExecNotifier:
    """The process's one notifier (started on first use). One that failed has ended
    every session it served; the next sandbox gets a fresh one (a trainer's process
    outlives one stall)."""
    global _notifier
    with _notifier_lock:
        if _notifier is None or _notifier.broken is not None:
            _notifier = ExecNotifier()
        return _notifier
