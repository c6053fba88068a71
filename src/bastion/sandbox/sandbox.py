"""One long-lived bubblewrap sandbox and the host side of its supervisor protocol.

``Sandbox`` knows nothing about policies beyond the ``sandbox:`` section, nothing
about events or verdicts: it starts the sandbox, runs commands in it, and kills,
freezes and removes it. ``Session`` builds attribution, telemetry and responses on
top of it.
"""

from __future__ import annotations

import array
import contextlib
import json
import marshal
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from ..errors import SandboxUnavailable, SessionBroken
from ..policy.sandbox import SandboxPolicy
from . import supervisor
from .bwrap import BwrapSpec, build_argv
from .cgroups import CgroupHost, SessionCgroup
from .seccomp import compiled_filter

__all__ = ["CallHandle", "RawResult", "Sandbox"]

_SUPERVISOR_SOURCE = Path(supervisor.__file__).read_bytes()  # runs its __main__ block
# The supervisor's code arrives on a pipe, so `ps` inside shows a one-line bootstrap.
_BOOTSTRAP = ("import os,sys;fd=int(sys.argv[2]);b=b''\n"
              "while (c:=os.read(fd,65536)):b+=c\n"
              "os.close(fd);exec(compile(b,'bastion-supervisor','exec'))")
_MAX_OUTPUT = 8 * 1024 * 1024  # per stream; the rest is counted and dropped
_START_TIMEOUT = 10.0


@dataclass(frozen=True)
class CallHandle:
    """A running tool call, as the host sees it."""

    host_pid: int
    pid_inside: int
    cgroup: Path
    pidfd: int


@dataclass(frozen=True)
class RawResult:
    stdout: bytes
    stderr: bytes
    status: int | None  # wait status from the supervisor; None if it never reported
    duration: float
    timed_out: bool
    truncated: bool
    interrupted: str | None = None  # why the host stopped the call, if it did


def _pid_of_pidfd(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise SessionBroken("supervisor sent a pidfd the host cannot resolve")


class _Spawner:
    """Starts every sandbox from one thread that lives as long as the process.

    bwrap's --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that forked
    it exits, not the process: a session created in a short-lived worker thread would
    die with that thread. Forking from this thread ties sandboxes to the process.
    """

    def __init__(self) -> None:
        import queue

        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]]
        self._jobs = queue.SimpleQueue()
        threading.Thread(target=self._run, name="bastion-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, box, done = self._jobs.get()
            try:
                box.append(("ok", fn()))
            except BaseException as exc:  # handed to the caller, who re-raises it
                box.append(("err", exc))
            done.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        box: list[Any] = []
        done = threading.Event()
        self._jobs.put((fn, box, done))
        done.wait()
        kind, value = box[0]
        if kind == "err":
            raise value
        return value


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    return _spawner.call(lambda: subprocess.Popen(argv, **kwargs))  # noqa: S603


def _reap(pids: set[int], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # not our child (reaped elsewhere, or never re-parented to us)
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.002)


class _OrphanDrain:
    """Keeps reading the output pipes of calls that returned while background
    processes still hold them, so those processes never die of SIGPIPE."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="bastion-drain", daemon=True)
        self._thread.start()

    def add(self, fd: int) -> None:
        with self._lock:
            self._sel.register(fd, selectors.EVENT_READ)
        os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            for key, _ in self._sel.select():
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if key.fd == self._wake_r:
                    continue
                if not data:
                    with self._lock:
                        self._sel.unregister(key.fd)
                    os.close(key.fd)


_drain: _OrphanDrain | None = None
_drain_lock = threading.Lock()


def _orphan_drain() -> _OrphanDrain:
    global _drain
    with _drain_lock:
        if _drain is None:
            _drain = _OrphanDrain()
        return _drain


class Sandbox:
    """A running sandbox: bwrap + supervisor inside a session cgroup tree."""

    def __init__(
        self,
        policy: SandboxPolicy,
        *,
        name: str,
        workspace: Path,
        state_dir: Path,
        cgroup_host: CgroupHost,
        host_uid: int,
        python: str = "/usr/bin/python3",
        netns: str | None = None,
    ) -> None:
        self.policy = policy
        self.name = name
        self.workspace = workspace
        self.state_dir = state_dir
        self.host_uid = host_uid
        self._python = python
        self._netns = netns  # path of a prepared network namespace, or None for a private one
        self._cgroup_host = cgroup_host
        self.cgroup: SessionCgroup | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._broken: str | None = None
        self.init_pids: tuple[int, ...] = ()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        rootfs = self.policy.rootfs
        if not os.path.exists(os.path.join(rootfs, self._python.lstrip("/"))):
            raise SandboxUnavailable(
                f"the sandbox root {rootfs!r} has no {self._python}; bastion's in-sandbox "
                "supervisor needs it (apt-get install python3-minimal)"
            )
        self.cgroup = self._cgroup_host.create_session(self.name)
        limits = self.policy.limits
        self.cgroup.set_limits(memory=limits.memory, pids=limits.pids, cpus=limits.cpus)

        host_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        info_r, info_w = os.pipe2(os.O_CLOEXEC)
        block_r, block_w = os.pipe2(os.O_CLOEXEC)
        sec_r, sec_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        src_r, src_w = os.pipe2(os.O_CLOEXEC)
        os.write(sec_w, compiled_filter())  # both are smaller than a pipe buffer
        os.close(sec_w)
        os.write(src_w, _SUPERVISOR_SOURCE)
        os.close(src_w)
        spec = BwrapSpec(
            workspace=self.workspace,
            state_dir=self.state_dir,
            info_fd=info_w,
            block_fd=block_r,
            seccomp_fd=sec_r,
            own_netns=self._netns is None,
        )
        command = [self._python, "-I", "-S", "-c", _BOOTSTRAP, str(child_sock.fileno()),
                   str(src_r)]
        try:
            argv = build_argv(self.policy, spec, command)
        except BaseException:
            for fd in (info_r, info_w, block_r, block_w, sec_r, err_r, err_w, src_r):
                os.close(fd)
            host_sock.close()
            child_sock.close()
            self._teardown()
            raise
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
               "LANG": "C.UTF-8", **self.policy.env}
        if self._netns is None:
            drop: dict[str, object] = {"user": self.host_uid, "group": self.host_uid,
                                       "extra_groups": []}
        else:
            # Joining a netns needs root, so the uid drop must come after it. nsenter and
            # setpriv (util-linux) do both and exec bwrap in the same process: cheaper
            # than a Python pre-exec hook, which forces a full fork of this process.
            uid = str(self.host_uid)
            argv = ["nsenter", f"--net={self._netns}", "--", "setpriv", f"--reuid={uid}",
                    f"--regid={uid}", "--clear-groups", "--", *argv]
            drop = {}
        try:
            self._proc = _spawn(
                argv,
                pass_fds=(child_sock.fileno(), info_w, block_r, sec_r, src_r),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_w,
                env=env,
                **drop,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self._teardown()
            os.close(err_r)
            raise SandboxUnavailable(f"cannot launch bubblewrap: {exc}") from exc
        finally:
            for fd in (info_w, block_r, sec_r, err_w, src_r):
                os.close(fd)
            child_sock.close()
        try:
            info = self._read_info(info_r)
            child_pid = int(info["child-pid"])
            self.cgroup.add_init(self._proc.pid, limited=False)
            self.cgroup.add_init(child_pid)
            self.init_pids = (self._proc.pid, child_pid)
            os.write(block_w, b"go")
            self._sock = host_sock
            self._send({"op": "ping"})
            reply, _ = self._recv(timeout=_START_TIMEOUT)
            if reply.get("op") != "pong":
                raise SandboxUnavailable(f"sandbox supervisor answered {reply!r}")
        except (SandboxUnavailable, SessionBroken, OSError, ValueError, KeyError) as exc:
            detail = self._stderr(err_r)
            self._teardown()
            raise SandboxUnavailable(
                f"sandbox failed to start: {detail or exc}"
            ) from exc
        finally:
            os.close(info_r)
            os.close(block_w)
            os.close(err_r)

    def _read_info(self, fd: int) -> dict[str, object]:
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + _START_TIMEOUT
        while b"}" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise SandboxUnavailable("bubblewrap did not report its child pid")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise SandboxUnavailable("bubblewrap exited during start-up")
            buf += chunk
        sel.close()
        return json.loads(buf[: buf.index(b"}") + 1])

    @staticmethod
    def _stderr(fd: int) -> str:
        os.set_blocking(fd, False)
        try:
            return os.read(fd, 65536).decode(errors="replace").strip()
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self._broken is None and self._proc is not None and self._proc.poll() is None

    @property
    def broken_reason(self) -> str | None:
        return self._broken

    def freeze(self) -> None:
        if self.cgroup is not None:
            self.cgroup.freeze()

    def thaw(self) -> None:
        if self.cgroup is not None:
            self.cgroup.thaw()

    def kill(self) -> None:
        """Kill every process of the sandbox. The sandbox cannot be used afterwards."""
        self._broken = self._broken or "killed"
        if self.cgroup is not None:
            self.cgroup.kill()

    def close(self) -> None:
        self._broken = self._broken or "closed"
        self._teardown()

    def _teardown(self) -> None:
        members: list[int] = []
        if self.cgroup is not None:
            members = self.cgroup.pids()
            self.cgroup.remove()  # kills everything first
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        # the sandbox's pid 1 and whatever it had not reaped were re-parented to us (Host
        # makes us a subreaper): reap them so no zombie is left behind
        _reap(set(self.init_pids[1:]) | set(members))
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- protocol ---------------------------------------------------------------------

    def _send(self, msg: Mapping[str, object], fds: tuple[int, ...] = ()) -> None:
        assert self._sock is not None
        data = marshal.dumps(dict(msg))  # see supervisor.py: host-to-sandbox is marshal
        try:
            if fds:
                self._sock.sendmsg(
                    [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                )
            else:
                self._sock.send(data)
        except OSError as exc:
            self._broken = self._broken or "supervisor gone"
            raise SessionBroken(f"the sandbox's supervisor is gone ({exc.strerror})") from exc

    def _recv(self, timeout: float | None = None) -> tuple[dict[str, object], list[int]]:
        assert self._sock is not None
        self._sock.settimeout(timeout)
        fds = array.array("i")
        try:
            data, ancdata, _, _ = self._sock.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
        except TimeoutError:
            raise
        except OSError as exc:
            self._broken = self._broken or "supervisor gone"
            raise SessionBroken(f"the sandbox's supervisor is gone ({exc.strerror})") from exc
        if not data:
            self._broken = self._broken or "supervisor gone"
            raise SessionBroken("the sandbox's supervisor exited (the sandbox was killed?)")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        return json.loads(data), list(fds)

    # -- running commands -------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        stdin: bytes | None,
        timeout: float,
        on_started: Callable[[CallHandle], None] | None = None,
        should_stop: Callable[[], str | None] | None = None,
    ) -> RawResult:
        """Run one command to completion (or timeout) and collect its output.

        ``on_started`` runs after the process exists and sits in its call cgroup but
        before it executes anything; ``should_stop`` is polled while it runs and may
        return a reason to kill it (a verdict, a session deadline).
        """
        if self._broken:
            raise SessionBroken(f"the sandbox is unusable: {self._broken}")
        assert self.cgroup is not None
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
            call_cgroup = self.cgroup.new_call()
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            start = time.monotonic()
            try:
                self._send(
                    {"op": "exec", "id": call_id, "argv": argv, "env": dict(env), "cwd": cwd},
                    (in_r, out_w, err_w),
                )
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            msg, fds = self._recv(timeout=_START_TIMEOUT)
            if msg.get("op") != "started" or len(fds) != 1:
                for fd in (in_w, out_r, err_r, *fds):
                    os.close(fd)
                raise SessionBroken(f"sandbox supervisor failed to start the command: {msg!r}")
            pidfd = fds[0]
            try:
                host_pid = _pid_of_pidfd(pidfd)
                if host_pid <= 0:  # fdinfo says -1 once the process has exited
                    raise ProcessLookupError(f"pid {msg.get('pid')} inside has exited")
                self.cgroup.add_to_call(call_cgroup, host_pid)
            except (OSError, SessionBroken) as exc:
                # the process died before it could be placed: the sandbox was killed
                # under us (a verdict, a failing sensor) or the agent killed it
                for fd in (in_w, out_r, err_r, pidfd):
                    os.close(fd)
                raise SessionBroken(
                    f"the call's process vanished before it started ({self._broken or exc})"
                ) from exc
            handle = CallHandle(host_pid, int(msg["pid"]), call_cgroup, pidfd)  # type: ignore[arg-type]
            try:
                if on_started is not None:
                    on_started(handle)
                self._send({"op": "go", "id": call_id})
                return self._collect(call_id, handle, in_w, out_r, err_r, stdin, start,
                                     timeout, should_stop)
            finally:
                os.close(pidfd)

    def _collect(
        self,
        call_id: int,
        handle: CallHandle,
        in_w: int,
        out_r: int,
        err_r: int,
        stdin: bytes | None,
        start: float,
        timeout: float,
        should_stop: Callable[[], str | None] | None,
    ) -> RawResult:
        assert self._sock is not None
        sel = selectors.DefaultSelector()
        bufs: dict[int, bytearray] = {out_r: bytearray(), err_r: bytearray()}
        truncated = False
        pending = memoryview(stdin or b"")
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        sel.register(out_r, selectors.EVENT_READ)
        sel.register(err_r, selectors.EVENT_READ)
        sel.register(self._sock, selectors.EVENT_READ)
        if pending:
            sel.register(in_w, selectors.EVENT_WRITE)
        else:
            os.close(in_w)
            in_w = -1
        status: int | None = None
        timed_out = False
        interrupted: str | None = None
        deadline = start + timeout
        kill_sent = False
        try:
            while status is None:
                now = time.monotonic()
                if not kill_sent:
                    reason = should_stop() if should_stop is not None else None
                    if now >= deadline or reason:
                        timed_out = now >= deadline and not reason
                        interrupted = reason or "timeout"
                        self._kill_call(call_id, handle)
                        kill_sent = True
                        deadline = now + 5.0  # the supervisor must report within this
                elif now >= deadline:
                    self._broken = self._broken or "supervisor unresponsive"
                    raise SessionBroken("the sandbox's supervisor stopped responding")
                wait = min(max(deadline - now, 0.0), 0.05)
                for key, _ in sel.select(wait):
                    if key.fileobj is self._sock:
                        msg, extra = self._recv(timeout=0)
                        for fd in extra:
                            os.close(fd)
                        if msg.get("op") == "exited" and msg.get("id") == call_id:
                            status = int(msg["status"])  # type: ignore[arg-type]
                    elif key.fd == in_w:
                        try:
                            n = os.write(in_w, pending[:65536])
                            pending = pending[n:]
                        except BrokenPipeError:
                            pending = memoryview(b"")
                        if not pending:
                            sel.unregister(in_w)
                            os.close(in_w)
                            in_w = -1
                    else:
                        truncated |= self._read_into(key.fd, bufs[key.fd], sel)
            # the command is gone; what it wrote before exiting is in the pipes now
            for fd in (out_r, err_r):
                with contextlib.suppress(KeyError):
                    while self._read_into(fd, bufs[fd], sel, once=False):
                        truncated = True
        finally:
            sel.close()
            if in_w >= 0:
                os.close(in_w)
        duration = time.monotonic() - start
        for fd in (out_r, err_r):
            self._release_pipe(fd)
        return RawResult(bytes(bufs[out_r]), bytes(bufs[err_r]), status, duration,
                         timed_out, truncated, interrupted)

    @staticmethod
    def _read_into(fd: int, buf: bytearray, sel: selectors.BaseSelector, once: bool = True) -> bool:
        """Read what is available; returns True if output was dropped for size."""
        dropped = False
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return dropped
            if not chunk:
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(fd)
                return dropped
            room = _MAX_OUTPUT - len(buf)
            if room > 0:
                buf += chunk[:room]
            if len(chunk) > room:
                dropped = True
            if once:
                return dropped

    @staticmethod
    def _release_pipe(fd: int) -> None:
        """Close our end, unless a background process still holds the other end."""
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            _orphan_drain().add(fd)  # writers remain: keep draining quietly
            return
        except OSError:
            chunk = b""
        if chunk:
            _orphan_drain().add(fd)
        else:
            os.close(fd)

    def _kill_call(self, call_id: int, handle: CallHandle) -> None:
        """Kill the call's foreground process group; the pidfd is the backstop."""
        with contextlib.suppress(SessionBroken):
            self._send({"op": "signal", "id": call_id, "sig": int(signal.SIGKILL)})
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(handle.pidfd, signal.SIGKILL)
