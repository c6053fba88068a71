"""Find and remove what dead bastion processes left behind: session cgroups, the
session's size-limited filesystems and session directories whose owning process is
gone.

A session records its owner's pid (and that pid's start time, so a recycled pid is not
mistaken for the owner) in ``<state>/sessions/<id>/owner``. Anything without a live
owner is killed and removed; sessions of live bastion processes are never touched.

Each state directory has a cgroup root of its own (``cgroup_prefix``): the owner
files of a state directory can only vouch for the sessions of that state directory,
so cleanup never even looks at another one's cgroups, let alone kills them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..image.overlay import remove_orphan_mount
from ..state import StateDir
from . import scratch
from .cgroups import _ROOT, CgroupHost, SessionCgroup

__all__ = ["Leftover", "cgroup_prefix", "find_leftovers", "owner_record", "remove_leftovers"]


def cgroup_prefix(state_root: os.PathLike[str] | str) -> str:
    """The cgroup root of one state directory, below bastion's: ``bastion/sd-<hash>``."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(state_root))).hexdigest()[:12]
    return f"bastion/sd-{digest}"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_record() -> str:
    pid = os.getpid()
    return f"{pid} {_start_time(pid)}\n"


def _owner_alive(record: str) -> bool:
    try:
        pid_s, start = record.split()
    except ValueError:
        return False
    return _start_time(int(pid_s)) == start


@dataclass(frozen=True)
class Leftover:
    session_id: str
    cgroup: bool
    directory: bool


def find_leftovers(state: StateDir, cgroups: CgroupHost) -> list[Leftover]:
    names: set[str] = set(cgroups.leftovers())
    with contextlib.suppress(OSError):
        names.update(p.name for p in state.sessions.iterdir() if p.is_dir())
    found = []
    for name in sorted(names):
        owner = state.sessions / name / "owner"
        try:
            alive = _owner_alive(owner.read_text())
        except OSError:
            alive = False
        if not alive:
            found.append(Leftover(name, (cgroups.unified / name).exists(),
                                  (state.sessions / name).exists()))
    return found


def _v1_dirs(cgroups: CgroupHost, name: str) -> dict[str, Path]:
    """A session's v1 cgroups may sit under any process's cgroup: search for them,
    below this state directory's prefix only."""
    tail = "/" + "/".join(cgroups.unified.parts[-2:])  # /bastion/sd-<hash>
    found: dict[str, Path] = {}
    for controller in ("memory", "pids", "cpu"):
        mount = _ROOT / controller
        if not mount.is_dir():
            continue
        for dirpath, dirnames, _ in os.walk(mount):
            if dirpath.endswith(tail) and name in dirnames:
                found[controller] = Path(dirpath) / name
                break
            if dirpath.count("/") - str(mount).count("/") > 8:
                dirnames[:] = []
    return found


def remove_leftovers(state: StateDir, cgroups: CgroupHost, leftovers: list[Leftover]) -> None:
    for item in leftovers:
        v1 = _v1_dirs(cgroups, item.session_id)
        if item.cgroup or v1:
            cg = SessionCgroup(cgroups, item.session_id, cgroups.unified / item.session_id, v1)
            cg.remove()
        if item.directory:
            # the session's size-limited filesystems first, or rmtree would empty them
            # and leave the mounts behind; a host workspace it overlaid is written back
            # and detached before the tmpfs holding the changes goes
            scratch.release_leftover_overlay(state.sessions / item.session_id)
            for mount in scratch.mounts_below(state.sessions / item.session_id):
                scratch.unmount(mount)
            # a dead image session's overlay is still mounted there: detach it first
            remove_orphan_mount(state.sessions / item.session_id)
            shutil.rmtree(state.sessions / item.session_id, ignore_errors=True)
