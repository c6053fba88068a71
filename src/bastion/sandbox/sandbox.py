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
import select
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SandboxUnavailable, SessionBroken
from ..image.view import ImageView
from ..policy.sandbox import SandboxPolicy
from . import scratch, supervisor
from .bwrap import BwrapSpec, args_via_fd, build_argv
from .cgroups import CgroupHost, SessionCgroup
from .execnotify import ExecNotifier, listener_fd_ok, notifier
from .execnotify import available as exec_notify_gap
from .seccomp import compiled_filter, notify_filter, seccomp_syscall_nr
from .steps import Acquire, Blocking, CallCancelled, Ready, Steps, drive
from .watch import SupervisorLost, supervisor_problem, watcher

__all__ = ["CANCELLED", "CallHandle", "RawResult", "Sandbox"]

_SUPERVISOR_SOURCE = Path(supervisor.__file__).read_bytes()  # runs its __main__ block
# The supervisor's code arrives on a pipe, so `ps` inside shows a one-line bootstrap.
_BOOTSTRAP = ("import os,sys;fd=int(sys.argv[2]);b=b''\n"
              "while (c:=os.read(fd,65536)):b+=c\n"
              "os.close(fd);exec(compile(b,'bastion-supervisor','exec'))")
_MAX_OUTPUT = 8 * 1024 * 1024  # per stream; the rest is counted and dropped
_START_TIMEOUT = 10.0
# One packet of the control socket carries at most the socket buffer (~200 KiB by
# default); a larger message travels in a memfd (see Sandbox._send).
_PACKET_MAX = 64 * 1024
# Launching waits longer than a live supervisor may stay silent: a rollout burst of 64
# session starts on 2 cores queues each supervisor's interpreter start behind the others.
_LAUNCH_TIMEOUT = 30.0
_LAUNCHES = threading.BoundedSemaphore(max(4, 2 * (os.cpu_count() or 1)))
_REPLY_SLICE = 0.1  # while waiting for a reply, look at the supervisor this often
# While a call runs it wakes when its process exits, writes, or is poked (``poke``: a
# verdict asks to stop it), and otherwise only this often, to look at the supervisor
# and at ``should_stop`` (the watch thread sees a lost supervisor in 0.2 s and kills
# the sandbox, which ends the call at once). Few wake-ups: many calls share one loop.
_CALL_LOOK = 0.25
CANCELLED = "cancelled by the caller"  # RawResult.interrupted of a cancelled call
_STARVED_LIMIT = 120.0  # how long a supervisor that is working or queued may take to answer


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


def _sched_progress(pid: int | None) -> tuple[bytes, bytes] | None:
    """Time on a CPU and time queued for one (``/proc/<pid>/schedstat``): a change
    means the process is working or waiting for a CPU, not blocked. None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            run, wait, *_ = f.read().split()
    except (OSError, ValueError):
        return None
    return run, wait


def _readable(fd: int) -> bool:
    """Whether ``fd`` has something to read right now (no waiting)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        return bool(poller.poll(0))
    except InterruptedError:
        return False


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
    return _spawner.call(lambda: subprocess.Popen(argv, **kwargs))


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


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a (small, host-written) tree keeping owners and modes; links stay links."""
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            target.mkdir()
            _copy_tree(Path(entry.path), target)
        else:
            shutil.copy2(entry.path, target)
        st = entry.stat(follow_symlinks=False)
        os.lchown(target, st.st_uid, st.st_gid)
        if not entry.is_symlink():
            os.chmod(target, st.st_mode & 0o7777)


# where a trust bundle is shown inside the sandbox, and the variables that name it
TRUST_PATH = "/run/bastion/ca-bundle.pem"
TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                   "NODE_EXTRA_CA_CERTS", "PIP_CERT", "GIT_SSL_CAINFO")
_SYSTEM_BUNDLES = ("etc/ssl/certs/ca-certificates.crt", "etc/pki/tls/certs/ca-bundle.crt",
                   "etc/ssl/cert.pem", "etc/ssl/ca-bundle.pem")


def trust_binds(trust: Path | None, rootfs: str | Path) -> tuple[tuple[str, str], ...]:
    """Read-only binds of ``trust`` at ``TRUST_PATH`` and over each system CA bundle
    the rootfs has as a plain file (clients that read the system store without being
    told trust it too); nothing without a bundle."""
    if trust is None:
        return ()
    binds = [(str(trust), TRUST_PATH)]
    for rel in _SYSTEM_BUNDLES:
        full = os.path.join(str(rootfs), rel)
        if os.path.isfile(full) and not os.path.islink(full):
            binds.append((str(trust), "/" + rel))
    return tuple(binds)


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
        on_lost: Callable[[str], None] | None = None,
        image: ImageView | None = None,
        trust: Path | None = None,
    ) -> None:
        """``trust`` is a CA bundle (the gateway's, when it inspects this session's
        TLS) shown over the system bundle and named by the usual CA variables.
        ``on_lost(reason)`` is called once if the supervisor is stopped, killed or
        stops answering (from the watch thread or the calling thread), after the
        sandbox was killed: the session records a ``monitor_tamper`` verdict."""
        self.policy = policy
        self.name = name
        self.workspace = workspace
        self.state_dir = state_dir
        self.host_uid = host_uid
        self._python = python
        self.image = image  # an image session: root is the image's overlay (bastion.image)
        self._netns = netns  # path of a prepared network namespace, or None for a private one
        self._trust = trust
        # CA variables every call gets unless its environment sets them (TLS inspection)
        self._trust_env: dict[str, str] = (
            dict.fromkeys(TRUST_VARIABLES, TRUST_PATH) if trust is not None else {})
        self._cgroup_host = cgroup_host
        self.cgroup: SessionCgroup | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._broken: str | None = None
        self.init_pids: tuple[int, ...] = ()
        self._lost_lock = threading.RLock()
        self._on_lost = on_lost
        self.lost: str | None = None  # why the supervisor was lost, if it was
        self.supervisor_pid: int | None = None  # host pid of the in-sandbox supervisor
        self._sup_pidfd = -1
        self._listener = -1  # the exec listener, owned by the notifier once registered
        self._notifier: ExecNotifier | None = None  # the one it is registered with
        self._mounts: list[Path] = []  # size-limited filesystems mounted for this sandbox
        # close() may come from two threads at once (a node shutting down its sessions
        # while the episode's own thread closes them): teardown runs once at a time, and
        # each fd is closed once (a second close could hit a reused descriptor)
        self._teardown_lock = threading.Lock()
        self._full: set[Path] = set()  # of those, the ones found full at the last look
        # written by ``poke`` (any thread) to wake the running call's wait at once
        self._poke_r, self._poke_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.disk_limit: int | None = None  # bytes the session's files may take
        self.unenforced: list[str] = []  # limits this sandbox cannot apply (and says so)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Launch the sandbox and wait for its supervisor. Launches are admitted a few at
        a time per process: a rollout burst (64 resets at once on 2 cores) then queues
        instead of starving every supervisor's start past its timeout."""
        with _LAUNCHES:
            self._start()

    def _start(self) -> None:
        rootfs = self.policy.rootfs
        if self.image is None and not os.path.exists(os.path.join(rootfs, self._python.lstrip("/"))):
            raise SandboxUnavailable(
                f"the sandbox root {rootfs!r} has no {self._python}; bastion's in-sandbox "
                "supervisor needs it (apt-get install python3-minimal)"
            )
        self.cgroup = self._cgroup_host.create_session(self.name)
        limits = self.policy.limits
        self.cgroup.set_limits(memory=limits.memory, pids=limits.pids, cpus=limits.cpus)
        try:
            scratch_dir = self._mount_scratch()
        except OSError as exc:
            self._teardown()
            raise SandboxUnavailable(f"cannot set up the session's disk limits: {exc}") from exc

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
            scratch=scratch_dir,
            tmp_size=limits.disk,
            image_root=self.image is not None,
            ro_binds=(*(self.image.runtime.binds if self.image is not None else ()),
                      *trust_binds(self._trust, self.image.root if self.image is not None
                                   else self.policy.rootfs)),
        )
        # in an image the supervisor runs on the host's Python (images may have none)
        python = list(self.image.runtime.command) if self.image is not None else [self._python]
        view = (self.policy if self.image is None
                else self.policy.model_copy(update={"rootfs": str(self.image.root)}))
        # the exec listener's filter (execnotify.py), unless the kernel has none: then
        # the process sensor says so once per session and reads /proc alone
        notify = ([notify_filter().hex(), str(seccomp_syscall_nr())]
                  if exec_notify_gap() is None else ["", ""])
        command = [*python, "-I", "-S", "-c", _BOOTSTRAP, str(child_sock.fileno()),
                   str(src_r), *notify]
        try:
            argv, args_fd = args_via_fd(build_argv(view, spec, command))
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
                pass_fds=(child_sock.fileno(), info_w, block_r, sec_r, src_r, args_fd),
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
            for fd in (info_w, block_r, sec_r, err_w, src_r, args_fd):
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
            if notify[0]:
                self._take_listener()
            reply, _ = self._recv(timeout=_LAUNCH_TIMEOUT)
            if reply.get("op") != "pong":
                raise SandboxUnavailable(f"sandbox supervisor answered {reply!r}")
            self._watch_supervisor()
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

    def _mount_scratch(self) -> Path | None:
        """One size-limited filesystem for /tmp, /var/tmp, /dev/shm and a workspace
        bastion created itself (see scratch.py). Returns the directory to bind."""
        limits = self.policy.limits
        session_dir = self.state_dir / "sessions" / self.name
        if not session_dir.is_dir():
            self.unenforced.append("disk")
            return None  # no session directory to hold the mount: bwrap's --size tmpfs
        target = session_dir / "scratch"
        target.mkdir(mode=0o711, exist_ok=True)
        self.disk_limit = scratch.effective_size(limits.disk, limits.memory)
        scratch.mount_tmpfs(target, size=self.disk_limit, inodes=limits.inodes, uid=0,
                            mode=0o711)
        self._mounts.append(target)
        subdirs = [*scratch.SCRATCH_DIRS]
        own_workspace = self.workspace.parent == session_dir
        if own_workspace:
            subdirs.append("workspace")
        for sub in subdirs:
            (target / sub).mkdir(mode=0o700)
            os.chown(target / sub, self.host_uid, self.host_uid)
        if own_workspace:
            # bastion's own workspace moves onto the limited tmpfs, with what a task's
            # prepare step already wrote there (owners and modes kept)
            _copy_tree(self.workspace, target / "workspace")
            scratch.bind(target / "workspace", self.workspace)
            self._mounts.append(self.workspace)
        elif scratch.overlay_workspace(self.workspace, target) is None:
            # a workspace on the host's disk: an overlay puts the agent's writes on
            # the tmpfs; unmount() writes them back at close (scratch.py)
            self._mounts.append(self.workspace)
        else:
            self.unenforced.append("disk(workspace)")
        return target

    def disk_full(self) -> list[str]:
        """The writable filesystems that reached ``limits.disk`` or ``limits.inodes``
        since the last look (what the agent saw as ENOSPC), described for a verdict.
        A filesystem is reported again only after it had room once more."""
        found = []
        for path in self._mounts[:1]:  # the tmpfs (the workspace is a bind of part of it)
            was_full = path in self._full
            self._full.discard(path)
            use = scratch.usage(path)
            if use is None:
                continue
            used, total, inodes_used, inodes_total = use
            where = "the session's files (workspace, /tmp, /var/tmp, /dev/shm)"
            if total and total - used < 64 * 1024:
                what = f"{where} reached the disk limit ({total} bytes)"
            elif inodes_total and inodes_used >= inodes_total - 1:
                what = f"{where} reached the inode limit ({inodes_total} files)"
            else:
                continue
            self._full.add(path)
            if not was_full:
                found.append(what)
        return found

    def _take_listener(self) -> None:
        """The supervisor's first message: the exec listener it installed before any
        call could run. Without it the session does not start (fail closed): this
        kernel has the feature (``exec_notify_gap``), so a missing listener is a fault."""
        reply, fds = self._recv(timeout=_LAUNCH_TIMEOUT)
        listener = fds.pop(0) if fds and reply.get("op") == "listener" else -1
        for fd in fds:
            os.close(fd)
        if listener < 0 or not listener_fd_ok(listener):
            if listener >= 0:
                os.close(listener)
            code = reply.get("errno")
            why = os.strerror(code) if isinstance(code, int) else repr(reply)
            raise SandboxUnavailable(f"the supervisor could not install the exec listener: {why}")
        serving = notifier()
        try:
            serving.register(listener, self._exec_notifier_failed)
        except OSError as exc:
            raise SandboxUnavailable(str(exc.strerror or exc)) from exc
        self._listener = listener
        self._notifier = serving

    def _exec_notifier_failed(self, reason: str) -> None:
        """Every exec of the session waits for the host's notifier: one that failed
        leaves the session unwatchable (or hung), so it ends like a lost supervisor."""
        self._supervisor_lost(reason)

    def _watch_supervisor(self) -> None:
        """Find the supervisor's host pid (the one process of the init cgroup besides
        bwrap's two), take a pidfd on it, and hand it to the watch thread."""
        assert self.cgroup is not None
        init = self.cgroup.unified / "init" / "cgroup.procs"
        others = [int(p) for p in init.read_text().split() if int(p) not in self.init_pids]
        if len(others) != 1:
            raise SandboxUnavailable(f"cannot tell the supervisor among {others}")
        self.supervisor_pid = others[0]
        self._sup_pidfd = os.pidfd_open(self.supervisor_pid)
        watcher().add(self.supervisor_pid, self._sup_pidfd, self._supervisor_lost)

    def _supervisor_lost(self, reason: str) -> None:
        """The supervisor cannot serve the session: kill the sandbox, then tell the
        session (once). A sandbox already killed or closed by bastion is not news."""
        # held while the session is told, so that whoever sees ``lost`` set (the
        # calling thread, about to raise) knows the session has recorded it
        with self._lost_lock:
            if self._broken is not None or self.lost is not None:
                return
            self.lost = reason
            self._broken = f"supervisor lost: {reason}"
            if self.cgroup is not None:
                self.cgroup.kill()
            if self._on_lost is not None:
                self._on_lost(reason)

    def _check_supervisor(self) -> None:
        """Raise SupervisorLost if the supervisor is stopped or gone."""
        if self._sup_pidfd < 0 or self.supervisor_pid is None:
            return
        problem = supervisor_problem(self.supervisor_pid, self._sup_pidfd)
        if problem is not None:
            self._supervisor_lost(problem)
        with self._lost_lock:  # the session has been told (see _supervisor_lost)
            lost = self.lost
        if lost is not None:
            raise SupervisorLost(lost)
        if problem is not None:
            raise SessionBroken(f"the sandbox is unusable: {self._broken}")

    def _read_info(self, fd: int) -> dict[str, object]:
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + _LAUNCH_TIMEOUT
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

    def poke(self) -> None:
        """Make the running call look at ``should_stop`` now (from any thread)."""
        with contextlib.suppress(OSError):  # full (a poke is pending) or closed
            os.write(self._poke_w, b"!")

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
        with self._teardown_lock:
            self._teardown_locked()

    def _teardown_locked(self) -> None:
        pidfd, self._sup_pidfd = self._sup_pidfd, -1
        if pidfd >= 0:
            watcher().remove(pidfd)
            os.close(pidfd)
        members: list[int] = []
        if self.cgroup is not None:
            members = self.cgroup.pids()
            self.cgroup.remove()  # kills everything first
        listener, self._listener = self._listener, -1
        if listener >= 0 and self._notifier is not None:
            # after the kill: an exec still waiting is answered, not failed
            self._notifier.unregister(listener)
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
        poke_r, poke_w, self._poke_r, self._poke_w = self._poke_r, self._poke_w, -1, -1
        for fd in (poke_r, poke_w):
            if fd >= 0:
                os.close(fd)
        while self._mounts:
            scratch.unmount(self._mounts.pop())

    # -- protocol ---------------------------------------------------------------------

    def _control(self) -> socket.socket:
        """The control socket, or SessionBroken when the sandbox was torn down
        meanwhile (a node shutting down ends sessions from another thread while a
        call is still waiting on the socket)."""
        sock = self._sock
        if sock is None:
            raise SessionBroken(f"the sandbox was ended ({self._broken or 'closed'})")
        return sock

    def _send(self, msg: Mapping[str, object], fds: tuple[int, ...] = ()) -> None:
        sock = self._control()
        data = marshal.dumps(dict(msg))  # see supervisor.py: host-to-sandbox is marshal
        spill = -1
        if len(data) > _PACKET_MAX:
            # past what one packet of the socket carries (an exec with a 1 MiB argv):
            # the message goes in a memfd, passed as the last fd of a "large" packet
            spill = os.memfd_create("bastion-msg", os.MFD_CLOEXEC)
            view = memoryview(data)
            while view:
                view = view[os.write(spill, view):]
            fds, data = (*fds, spill), marshal.dumps({"op": "large"})
        # a reply may have left the socket non-blocking: a send waits for room (the
        # supervisor reads at once; only a stopped one leaves it full, and is lost)
        sock.settimeout(_START_TIMEOUT)
        try:
            if fds:
                sock.sendmsg(
                    [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                )
            else:
                sock.send(data)
        except OSError as exc:
            self._broken = self._broken or "supervisor gone"
            raise SessionBroken(f"the sandbox's supervisor is gone ({exc.strerror})") from exc
        finally:
            if spill >= 0:
                os.close(spill)

    def _recv(self, timeout: float | None = None) -> tuple[dict[str, object], list[int]]:
        sock = self._control()
        fds = array.array("i")
        try:
            sock.settimeout(timeout)
            data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(4 * fds.itemsize))
        except TimeoutError:
            raise
        except BlockingIOError:  # timeout=0 and nothing there yet
            raise TimeoutError("no message from the supervisor yet") from None
        except OSError as exc:
            self._lose_connection()
            raise SessionBroken(f"the sandbox's supervisor is gone ({exc.strerror})") from exc
        if not data:
            self._lose_connection()
            with self._lost_lock:
                lost = self.lost
            if lost is not None:
                raise SupervisorLost(lost)
            raise SessionBroken("the sandbox's supervisor exited (the sandbox was killed?)")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
        return json.loads(data), list(fds)

    def _lose_connection(self) -> None:
        """The control socket broke. Bastion did not kill the sandbox (then _broken
        would say so): the supervisor was killed under it."""
        if self._broken is None and self._sup_pidfd >= 0:
            self._supervisor_lost("the sandbox's supervisor was killed")
        self._broken = self._broken or "supervisor gone"

    def _reply_steps(self, call_id: int, call: _CallFlags) -> Steps[tuple[dict[str, object], list[int]]]:
        """Wait for the supervisor's reply to request ``call_id``. The supervisor is
        looked at while waiting, so a stopped one ends the session in ~0.1 s rather
        than a timeout; a reply to any other request breaks the session (the agent
        cannot make bastion act on a message meant for another call). A caller that
        cancels meanwhile still waits for the reply: the process it announces must be
        accounted for (and killed) before the next call uses the socket."""
        start = time.monotonic()
        deadline = start + _START_TIMEOUT
        progress = _sched_progress(self.supervisor_pid)
        while True:
            self._check_supervisor()
            sock_fd = self._control().fileno()  # torn down meanwhile: SessionBroken
            ready = yield from _wait(Ready((sock_fd,), (), _REPLY_SLICE), call)
            if not ready:
                now = time.monotonic()
                if now < deadline:
                    continue
                if _readable(sock_fd):
                    continue  # the answer is there: the host was the late one, not it
                # Silent for _START_TIMEOUT. A supervisor that ran or queued for a CPU
                # meanwhile is starved by the host's load (a burst of hundreds of
                # calls on 2 cores), not tampered with: wait on, up to a hard limit.
                # A stopped one is caught by _check_supervisor; a sleeping one that
                # does not answer makes no progress and is lost.
                seen = _sched_progress(self.supervisor_pid)
                if seen is not None and seen != progress and now - start < _STARVED_LIMIT:
                    progress, deadline = seen, now + _START_TIMEOUT
                    continue
                self._supervisor_lost(
                    f"the sandbox's supervisor did not answer within {_START_TIMEOUT:.0f}s")
                raise SupervisorLost(self.lost or "supervisor unresponsive") from None
            try:
                msg, fds = self._recv(timeout=0)
            except TimeoutError:
                continue  # woken without a message
            if msg.get("id") != call_id:
                for fd in fds:
                    os.close(fd)
                self._broken = self._broken or "protocol error"
                raise SessionBroken(
                    f"the sandbox's supervisor answered request {msg.get('id')!r} while "
                    f"bastion waited for {call_id}: {msg!r}")
            return msg, fds

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
        """Run one command to completion (or timeout) and collect its output,
        blocking this thread (``call_steps`` driven by ``steps.drive``).

        ``on_started`` runs after the process exists and sits in its call cgroup but
        before it executes anything; ``should_stop`` is polled while it runs and may
        return a reason to kill it (a verdict, a session deadline).
        """
        def started(handle: CallHandle) -> Steps[None]:
            if on_started is not None:
                on_started(handle)
            return
            yield  # a generator with no requests

        return drive(self.call_steps(argv, env=env, cwd=cwd, stdin=stdin, timeout=timeout,
                                     on_started=started, should_stop=should_stop))

    def call_steps(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        stdin: bytes | None,
        timeout: float,
        on_started: Callable[[CallHandle], Steps[None]] | None = None,
        should_stop: Callable[[], str | None] | None = None,
    ) -> Steps[RawResult]:
        """``run`` as steps (see ``steps.py``), for a blocking or an asyncio caller.

        ``on_started(handle)`` returns the steps to take once the process exists and
        sits in its call cgroup, before it executes anything (the session makes what
        it asked for durable there). If the caller cancels, the call's cgroup is
        killed (the process never runs if it had not yet) and the result says
        ``interrupted=CANCELLED``.
        """
        with self._lost_lock:
            lost = self.lost
        if lost is not None:
            raise SupervisorLost(lost)
        if self._broken:
            raise SessionBroken(f"the sandbox is unusable: {self._broken}")
        assert self.cgroup is not None
        yield Acquire(self._lock)  # a CallCancelled here: nothing started, nothing held
        try:
            if self._trust_env:
                env = {**self._trust_env, **env}
            return (yield from self._call_locked(argv, env, cwd, stdin, timeout, on_started,
                                                 should_stop))
        finally:
            self._lock.release()

    def _call_locked(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: str,
        stdin: bytes | None,
        timeout: float,
        on_started: Callable[[CallHandle], Steps[None]] | None,
        should_stop: Callable[[], str | None] | None,
    ) -> Steps[RawResult]:
        assert self.cgroup is not None
        call = _CallFlags()
        self._check_supervisor()
        # cgroup writes take milliseconds under load: off an event loop's thread
        call_cgroup: Path = yield Blocking(self.cgroup.new_call)
        self._next_id += 1
        call_id = self._next_id
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        start = time.monotonic()
        try:
            # bytes: an argument that is not valid UTF-8 (surrogateescape'd by the
            # caller) reaches the kernel as the bytes it stands for
            self._send(
                {"op": "exec", "id": call_id, "argv": [os.fsencode(a) for a in argv],
                 "env": dict(env), "cwd": cwd},
                (in_r, out_w, err_w),
            )
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        try:
            msg, fds = yield from self._reply_steps(call_id, call)
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        if msg.get("op") != "started" or len(fds) != 1:
            for fd in (in_w, out_r, err_r, *fds):
                os.close(fd)
            raise SessionBroken(f"sandbox supervisor failed to start the command: {msg!r}")
        pidfd = fds[0]
        cgroups = self.cgroup
        try:
            host_pid = _pid_of_pidfd(pidfd)
            if host_pid <= 0:  # fdinfo says -1 once the process has exited
                raise ProcessLookupError(f"pid {msg.get('pid')} inside has exited")
            # cancelled here: never placed, never run (killed below by pid and group)
            yield from _step(lambda: cgroups.add_to_call(call_cgroup, host_pid), call)
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
            if on_started is not None and not call.cancelled:
                try:
                    yield from on_started(handle)
                except CallCancelled:
                    call.cancelled = True
            if not call.cancelled:
                self._send({"op": "go", "id": call_id})
            return (yield from self._collect_steps(call_id, handle, in_w, out_r, err_r, stdin,
                                                   start, timeout, should_stop, call))
        finally:
            os.close(pidfd)

    def _collect_steps(
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
        call: _CallFlags,
    ) -> Steps[RawResult]:
        bufs: dict[int, bytearray] = {out_r: bytearray(), err_r: bytearray()}
        reading = {out_r, err_r}  # until each reaches end of file
        truncated = False
        pending = memoryview(stdin or b"")
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        if not pending:
            os.close(in_w)
            in_w = -1
        status: int | None = None
        timed_out = False
        interrupted: str | None = None
        deadline = start + timeout
        kill_sent = False
        killed_at, kill_progress = start, _sched_progress(None)
        next_look = start
        try:
            while status is None:
                now = time.monotonic()
                if now >= next_look:
                    self._check_supervisor()
                    next_look = now + _CALL_LOOK
                if not kill_sent:
                    reason = CANCELLED if call.cancelled else (
                        should_stop() if should_stop is not None else None)
                    if now >= deadline or reason:
                        timed_out = now >= deadline and not reason
                        interrupted = reason or "timeout"
                        self._kill_call(call_id, handle, whole=call.cancelled)
                        kill_sent, killed_at = True, now
                        kill_progress = _sched_progress(self.supervisor_pid)
                        deadline = now + 5.0  # the supervisor must report within this
                elif now >= deadline:
                    # as in _reply_steps: a report already waiting means the host was
                    # late; a supervisor that ran or queued for a CPU is starved by the
                    # host's load. Only one asleep with nothing sent is lost.
                    seen = _sched_progress(self.supervisor_pid)
                    if _readable(self._control().fileno()):
                        deadline = now + 5.0
                    elif (seen is not None and seen != kill_progress
                          and now - killed_at < _STARVED_LIMIT):
                        kill_progress, deadline = seen, now + 5.0
                    else:
                        self._supervisor_lost("the sandbox's supervisor stopped responding")
                        raise SupervisorLost(self.lost or "supervisor unresponsive")
                wait = min(max(deadline - now, 0.0), max(next_look - now, 0.0))
                writing = (in_w,) if in_w >= 0 else ()
                # the sandbox may be torn down from another thread (a node shutting
                # down): its fds are looked up afresh each turn, never used once closed
                sock_fd, poke_r = self._control().fileno(), self._poke_r
                if poke_r < 0:
                    raise SessionBroken(f"the sandbox was ended ({self._broken or 'closed'})")
                ready = yield from _wait(
                    Ready((sock_fd, poke_r, *reading), writing, wait), call)
                if poke_r in ready:
                    with contextlib.suppress(BlockingIOError, OSError):
                        os.read(poke_r, 4096)
                if sock_fd in ready:
                    try:
                        msg, extra = self._recv(timeout=0)
                    except TimeoutError:
                        msg, extra = {}, []
                    for fd in extra:
                        os.close(fd)
                    if msg and msg.get("id") != call_id:
                        self._broken = self._broken or "protocol error"
                        raise SessionBroken(
                            f"the sandbox's supervisor answered request {msg.get('id')!r} "
                            f"during call {call_id}: {msg!r}")
                    if msg.get("op") == "exited":
                        status = int(msg["status"])  # type: ignore[arg-type]
                if in_w >= 0 and in_w in ready:
                    try:
                        n = os.write(in_w, pending[:65536])
                        pending = pending[n:]
                    except BlockingIOError:
                        pass
                    except BrokenPipeError:
                        pending = memoryview(b"")
                    if not pending:
                        os.close(in_w)
                        in_w = -1
                for fd in (out_r, err_r):
                    if fd in ready and fd in reading:
                        truncated |= self._read_into(fd, bufs[fd], reading)
            # the command is gone; what it wrote before exiting is in the pipes now
            for fd in (out_r, err_r):
                while fd in reading and self._read_into(fd, bufs[fd], reading, once=False):
                    truncated = True
        finally:
            if in_w >= 0:
                os.close(in_w)
        duration = time.monotonic() - start
        for fd in (out_r, err_r):
            self._release_pipe(fd)
        return RawResult(bytes(bufs[out_r]), bytes(bufs[err_r]), status, duration,
                         timed_out, truncated, interrupted)

    @staticmethod
    def _read_into(fd: int, buf: bytearray, reading: set[int], once: bool = True) -> bool:
        """Read what is available; returns True if output was dropped for size. An fd
        at end of file leaves ``reading``."""
        dropped = False
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return dropped
            if not chunk:
                reading.discard(fd)
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

    def _kill_call(self, call_id: int, handle: CallHandle, *, whole: bool = False) -> None:
        """Kill the call's foreground process group; the pidfd is the backstop. With
        ``whole`` (the caller cancelled the call), every process of the call's cgroup,
        background ones too."""
        if whole and self.cgroup is not None:
            self.cgroup.kill_call(handle.cgroup)
        with contextlib.suppress(SessionBroken):
            self._send({"op": "signal", "id": call_id, "sig": int(signal.SIGKILL)})
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(handle.pidfd, signal.SIGKILL)


class _CallFlags:
    """What the caller told a running call: ``cancelled`` once it stopped waiting."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


def _step(fn: Callable[[], object], call: _CallFlags) -> Steps[None]:
    """A ``Blocking`` step that a cancellation skips (marking the call cancelled)."""
    try:
        yield Blocking(fn)
    except CallCancelled:
        call.cancelled = True


def _wait(request: Ready, call: _CallFlags) -> Steps[set[int]]:
    """Ask for ``request``; a cancellation thrown in instead marks the call cancelled
    (the caller kills it and waits for its end) and answers "nothing ready"."""
    try:
        return (yield request)  # type: ignore[no-any-return]
    except CallCancelled:
        call.cancelled = True
        return set()
