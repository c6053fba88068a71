"""Cgroups for sessions, on cgroup v2 hosts and on hybrid v1/v2 hosts.

Each session gets one cgroup *tree*:

    <session>/            limits + a reserve for the supervisor (v2)
    <session>/init        bwrap and the in-sandbox supervisor
    <session>/call-<n>    the processes of one tool call, and everything they fork;
                          on v2 each call is capped at the policy's limits as well

The supervisor must outlive whatever the agent does to its own calls (an OOM, a fork
bomb): the calls' memory and pids are accounted apart from it, or with a reserve
above the calls' limit. On v2 the session's limit is the policy's plus
``SUPERVISOR_RESERVE`` and each call is capped at the policy's limit. On a hybrid host
the v1 limit hierarchies have one more level, ``<session>/init`` (the supervisor, with
a small cap of its own) beside ``<session>/calls`` (every call, capped at the policy's
limits), so no amount of the agent's memory or tasks is charged to the supervisor.

Per-call child cgroups are how bastion attributes processes to the call that caused
them: cgroup membership is inherited across fork, double fork and setsid, and a
sandboxed process cannot move itself out (the cgroup filesystem is not visible to it).

On a hybrid host the limit controllers live on separate v1 hierarchies while
``cgroup.kill`` / ``cgroup.freeze`` exist only on the v2 unified mount, so a session
has one cgroup in each v1 controller hierarchy (limits) plus the v2 tree (kill,
freeze, per-call attribution). ``CgroupHost.detect()`` works out which layout the
host offers, and ``unenforced`` lists the limits it cannot apply, so callers can say
so rather than pretend.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SandboxUnavailable

__all__ = ["CgroupHost", "SessionCgroup"]

_ROOT = Path("/sys/fs/cgroup")
_V1_LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
# What bastion's own in-sandbox processes (bwrap's pid 1 and the supervisor) may use,
# apart from the agent's calls.
SUPERVISOR_RESERVE_MEMORY = 64 * 1024 * 1024
SUPERVISOR_RESERVE_PIDS = 32


def _is_cgroup2(path: Path) -> bool:
    try:
        return os.statvfs(path) is not None and (path / "cgroup.controllers").exists()
    except OSError:
        return False


def _own_v1_path(controller: str) -> str:
    """This process's cgroup path in a v1 hierarchy, from /proc/self/cgroup."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path
    return "/"


@dataclass(frozen=True)
class CgroupHost:
    """What this host's cgroup setup offers, detected once."""

    mode: str  # "v2" or "hybrid"
    unified: Path  # base directory for bastion's v2 trees
    v1: dict[str, Path] = field(default_factory=dict)  # controller -> base directory
    available: frozenset[str] = frozenset()  # enforceable limits: memory, pids, cpu

    @classmethod
    def detect(cls, prefix: str = "bastion") -> CgroupHost:
        """``prefix`` may have several parts (``bastion/sd-1a2b``): one cgroup root per
        state directory, so that `bastion cleanup` of one state directory can never
        see, let alone kill, the sessions of another."""
        if _is_cgroup2(_ROOT):
            controllers = set((_ROOT / "cgroup.controllers").read_text().split())
            wanted = [c for c in ("memory", "pids", "cpu") if c in controllers]
            _enable_controllers(_ROOT, wanted)
            base = _ROOT
            for part in prefix.split("/"):
                base = base / part
                _mkdir(base)
                _enable_controllers(base, wanted)
            have = set((base / "cgroup.subtree_control").read_text().split())
            return cls("v2", base, {}, frozenset(c for c in wanted if c in have))
        unified = _ROOT / "unified"
        if not _is_cgroup2(unified):
            raise SandboxUnavailable(
                "bastion needs cgroup v2 (or a hybrid host with /sys/fs/cgroup/unified) to "
                "kill and freeze sessions; boot with systemd.unified_cgroup_hierarchy=1"
            )
        base = _mkdirs(unified, prefix)
        v1: dict[str, Path] = {}
        for controller in _V1_LIMIT_CONTROLLERS:
            mount = _ROOT / controller
            if (mount / "cgroup.procs").exists():
                # nest under our own cgroup so that whoever contains us contains sessions
                own = _own_v1_path(controller).lstrip("/")
                v1[controller] = _mkdirs(mount / own if own else mount, prefix)
        return cls("hybrid", base, v1, frozenset(v1))

    def unenforced(self, wanted: tuple[str, ...] = ("memory", "pids", "cpu")) -> list[str]:
        return [w for w in wanted if w not in self.available]

    def create_session(self, name: str) -> SessionCgroup:
        return SessionCgroup.create(self, name)

    def leftovers(self) -> list[str]:
        """Session cgroups that exist now (for `bastion cleanup`)."""
        names = set()
        for base in (self.unified, *self.v1.values()):
            with contextlib.suppress(OSError):
                names.update(p.name for p in base.iterdir() if p.is_dir())
        return sorted(names)


def _mkdirs(base: Path, prefix: str) -> Path:
    for part in prefix.split("/"):
        base = base / part
        _mkdir(base)
    return base


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise SandboxUnavailable(
            f"cannot create cgroup {path}: {exc.strerror}; bastion must run as root "
            "with a writable cgroup filesystem"
        ) from exc


def _enable_controllers(path: Path, controllers: list[str]) -> None:
    current = set((path / "cgroup.subtree_control").read_text().split())
    missing = [c for c in controllers if c not in current]
    if missing:
        with contextlib.suppress(OSError):
            (path / "cgroup.subtree_control").write_text(" ".join("+" + c for c in missing))


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


@dataclass
class SessionCgroup:
    """The cgroups of one session. All operations are idempotent."""

    host: CgroupHost
    name: str
    unified: Path
    v1: dict[str, Path]
    _calls: int = 0
    _call_limits: tuple[int, int] | None = None  # v2: (memory, pids) of each call

    @classmethod
    def create(cls, host: CgroupHost, name: str) -> SessionCgroup:
        unified = host.unified / name
        unified.mkdir()
        (unified / "init").mkdir()
        v1 = {}
        for controller, base in host.v1.items():
            path = base / name
            path.mkdir()
            (path / "init").mkdir()
            (path / "calls").mkdir()
            v1[controller] = path
        return cls(host, name, unified, v1)

    # -- limits ---------------------------------------------------------------------

    def set_limits(self, *, memory: int, pids: int, cpus: float) -> None:
        """The policy's limits apply to the agent's calls; the supervisor keeps a
        reserve of its own on top (see the module docstring)."""
        period = 100_000
        quota = max(1000, int(cpus * period))
        if self.host.mode == "v2":
            if "memory" in self.host.available:
                _write(self.unified / "memory.max", str(memory + SUPERVISOR_RESERVE_MEMORY))
                with contextlib.suppress(OSError):
                    _write(self.unified / "memory.swap.max", "0")
            if "pids" in self.host.available:
                _write(self.unified / "pids.max", str(pids + SUPERVISOR_RESERVE_PIDS))
            if "cpu" in self.host.available:
                _write(self.unified / "cpu.max", f"{quota} {period}")
            self._call_limits = (memory, pids)
            return
        if "memory" in self.v1:
            calls, init = self.v1["memory"] / "calls", self.v1["memory"] / "init"
            _write(calls / "memory.limit_in_bytes", str(memory))
            with contextlib.suppress(OSError):
                _write(calls / "memory.memsw.limit_in_bytes", str(memory))
            with contextlib.suppress(OSError):
                _write(calls / "memory.swappiness", "0")
            _write(init / "memory.limit_in_bytes", str(SUPERVISOR_RESERVE_MEMORY))
        if "pids" in self.v1:
            _write(self.v1["pids"] / "calls" / "pids.max", str(pids))
            _write(self.v1["pids"] / "init" / "pids.max", str(SUPERVISOR_RESERVE_PIDS))
        if "cpu" in self.v1:
            _write(self.v1["cpu"] / "calls" / "cpu.cfs_period_us", str(period))
            _write(self.v1["cpu"] / "calls" / "cpu.cfs_quota_us", str(quota))

    # -- membership -----------------------------------------------------------------

    def add_init(self, pid: int, *, limited: bool = True) -> None:
        """Place a sandbox-level process (bwrap, supervisor) in the session.

        ``limited=False`` puts it only in the v2 tree (kill, freeze, cleanup) and not in
        the v1 limit hierarchies: used for bwrap's outer monitor process, which lives
        outside the sandbox's namespaces, is bastion's overhead rather than the agent's,
        and whose migration into a v1 memory cgroup costs ~10 ms.
        """
        if limited:
            for path in self.v1.values():
                _write(path / "init" / "cgroup.procs", str(pid))
        _write(self.unified / "init" / "cgroup.procs", str(pid))

    def new_call(self) -> Path:
        self._calls += 1
        path = self.unified / f"call-{self._calls}"
        path.mkdir()
        if self._call_limits is not None:
            memory, pids = self._call_limits
            if "memory" in self.host.available:
                _write(path / "memory.max", str(memory))
            if "pids" in self.host.available:
                _write(path / "pids.max", str(pids))
        return path

    def add_to_call(self, call_cgroup: Path, pid: int) -> None:
        """Move a call's first process (forked by the supervisor, so still charged to
        it) into the call's cgroups before it runs anything: from here on everything
        it and its descendants use is the agent's, not the supervisor's."""
        for path in self.v1.values():
            _write(path / "calls" / "cgroup.procs", str(pid))
        _write(call_cgroup / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        found: list[int] = []
        for path in self._all_unified():
            with contextlib.suppress(OSError):
                found.extend(int(x) for x in (path / "cgroup.procs").read_text().split())
        return found

    def _all_unified(self) -> Iterator[Path]:
        if not self.unified.exists():
            return
        yield self.unified
        with contextlib.suppress(OSError):
            yield from (p for p in self.unified.iterdir() if p.is_dir())

    # -- control --------------------------------------------------------------------

    def freeze(self, timeout: float = 2.0) -> bool:
        """Freeze and wait until the kernel reports every task stopped."""
        _write(self.unified / "cgroup.freeze", "1")
        deadline = time.monotonic() + timeout
        while not self.frozen():
            if time.monotonic() > deadline or not self.populated():
                return self.frozen()
            time.sleep(0.001)
        return True

    def thaw(self) -> None:
        _write(self.unified / "cgroup.freeze", "0")

    def frozen(self) -> bool:
        with contextlib.suppress(OSError):
            for line in (self.unified / "cgroup.events").read_text().splitlines():
                if line.startswith("frozen "):
                    return line.split()[1] == "1"
        return False

    def kill(self) -> None:
        """SIGKILL every process of the session, including frozen ones."""
        with contextlib.suppress(FileNotFoundError):
            _write(self.unified / "cgroup.kill", "1")

    def kill_call(self, call_cgroup: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            _write(call_cgroup / "cgroup.kill", "1")

    def populated(self) -> bool:
        with contextlib.suppress(OSError):
            for line in (self.unified / "cgroup.events").read_text().splitlines():
                if line.startswith("populated "):
                    return line.split()[1] == "1"
        return False

    def wait_empty(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.populated():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    # -- accounting -----------------------------------------------------------------

    def memory_bytes(self) -> int | None:
        candidates = [self.unified / "memory.current"]
        if "memory" in self.v1:
            candidates.insert(0, self.v1["memory"] / "calls" / "memory.usage_in_bytes")
        for path in candidates:
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text())
        return None

    def oom_kills(self) -> int:
        """OOM kills among the agent's calls (the supervisor's cgroup is apart)."""
        if "memory" in self.v1:
            with contextlib.suppress(OSError):
                text = (self.v1["memory"] / "calls" / "memory.oom_control").read_text()
                for line in text.splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            return 0
        with contextlib.suppress(OSError, ValueError):  # hierarchical: every call's kills
            for line in (self.unified / "memory.events").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def supervisor_oom_kills(self) -> int:
        """OOM kills in bastion's own part of the sandbox (bwrap, the supervisor)."""
        path = (self.v1["memory"] / "init" / "memory.oom_control") if "memory" in self.v1 \
            else (self.unified / "init" / "memory.events")
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def pids_current(self) -> int | None:
        path = (self.v1["pids"] / "calls" / "pids.current") if "pids" in self.v1 \
            else (self.unified / "pids.current")
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
        return None

    def cpu_usage_usec(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            for line in (self.unified / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1])
        return None

    # -- teardown -------------------------------------------------------------------

    def remove(self) -> None:
        """Kill everything and remove every directory of the tree."""
        with contextlib.suppress(OSError):
            self.thaw()  # a frozen task cannot die until thawed on some kernels
        self.kill()
        self.wait_empty(timeout=5.0)
        for path in sorted(self._all_unified(), key=lambda p: len(p.parts), reverse=True):
            _rmdir_retry(path)
        for path in self.v1.values():
            for sub in ("calls", "init"):
                _rmdir_retry(path / sub)
            _rmdir_retry(path)


def _rmdir_retry(path: Path, attempts: int = 200) -> None:
    for _ in range(attempts):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.005)
