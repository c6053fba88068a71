"""Cgroups for sessions, on cgroup v2 hosts and on hybrid v1/v2 hosts.

Each session gets one cgroup *tree*:

    <session>/            limits (memory, pids, cpu) live here on v2
    <session>/init        bwrap and the in-sandbox supervisor
    <session>/call-<n>    the processes of one tool call, and everything they fork

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
        if _is_cgroup2(_ROOT):
            controllers = set((_ROOT / "cgroup.controllers").read_text().split())
            base = _ROOT / prefix
            _mkdir(base)
            wanted = [c for c in ("memory", "pids", "cpu") if c in controllers]
            _enable_controllers(_ROOT, wanted)
            _enable_controllers(base, wanted)
            have = set((base / "cgroup.subtree_control").read_text().split())
            return cls("v2", base, {}, frozenset(c for c in wanted if c in have))
        unified = _ROOT / "unified"
        if not _is_cgroup2(unified):
            raise SandboxUnavailable(
                "bastion needs cgroup v2 (or a hybrid host with /sys/fs/cgroup/unified) to "
                "kill and freeze sessions; boot with systemd.unified_cgroup_hierarchy=1"
            )
        base = unified / prefix
        _mkdir(base)
        v1: dict[str, Path] = {}
        for controller in _V1_LIMIT_CONTROLLERS:
            mount = _ROOT / controller
            if (mount / "cgroup.procs").exists():
                # nest under our own cgroup so that whoever contains us contains sessions
                own = _own_v1_path(controller).lstrip("/")
                ctrl_base = mount / own / prefix
                _mkdir(ctrl_base)
                v1[controller] = ctrl_base
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

    @classmethod
    def create(cls, host: CgroupHost, name: str) -> SessionCgroup:
        unified = host.unified / name
        unified.mkdir()
        (unified / "init").mkdir()
        v1 = {}
        for controller, base in host.v1.items():
            path = base / name
            path.mkdir()
            v1[controller] = path
        return cls(host, name, unified, v1)

    # -- limits ---------------------------------------------------------------------

    def set_limits(self, *, memory: int, pids: int, cpus: float) -> None:
        period = 100_000
        quota = max(1000, int(cpus * period))
        if self.host.mode == "v2":
            if "memory" in self.host.available:
                _write(self.unified / "memory.max", str(memory))
                with contextlib.suppress(OSError):
                    _write(self.unified / "memory.swap.max", "0")
            if "pids" in self.host.available:
                _write(self.unified / "pids.max", str(pids))
            if "cpu" in self.host.available:
                _write(self.unified / "cpu.max", f"{quota} {period}")
            return
        if "memory" in self.v1:
            _write(self.v1["memory"] / "memory.limit_in_bytes", str(memory))
            with contextlib.suppress(OSError):
                _write(self.v1["memory"] / "memory.memsw.limit_in_bytes", str(memory))
            with contextlib.suppress(OSError):
                _write(self.v1["memory"] / "memory.swappiness", "0")
        if "pids" in self.v1:
            _write(self.v1["pids"] / "pids.max", str(pids))
        if "cpu" in self.v1:
            _write(self.v1["cpu"] / "cpu.cfs_period_us", str(period))
            _write(self.v1["cpu"] / "cpu.cfs_quota_us", str(quota))

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
                _write(path / "cgroup.procs", str(pid))
        _write(self.unified / "init" / "cgroup.procs", str(pid))

    def new_call(self) -> Path:
        self._calls += 1
        path = self.unified / f"call-{self._calls}"
        path.mkdir()
        return path

    def add_to_call(self, call_cgroup: Path, pid: int) -> None:
        # v1 membership is inherited from the supervisor already
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
            candidates.insert(0, self.v1["memory"] / "memory.usage_in_bytes")
        for path in candidates:
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text())
        return None

    def oom_kills(self) -> int:
        if "memory" in self.v1:
            with contextlib.suppress(OSError):
                for line in (self.v1["memory"] / "memory.oom_control").read_text().splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            return 0
        with contextlib.suppress(OSError):
            for line in (self.unified / "memory.events").read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def pids_current(self) -> int | None:
        path = (self.v1["pids"] / "pids.current") if "pids" in self.v1 else (self.unified / "pids.current")
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
