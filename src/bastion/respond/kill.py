"""Killing one process tree inside a session, safely against pid reuse.

Used when a verdict names a process but no call cgroup (or the call's cgroup is
gone). Every target is opened as a pidfd and checked to still be inside the
session's cgroup before the signal is sent, so a recycled pid on the host is never
hit. Children are found from the session's own pid list (a sandboxed process cannot
leave the session cgroup), repeated until no new descendant appears.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable

from ..sensors.procfs import read_cgroup, read_stat

__all__ = ["kill_tree"]


def _children(pids: Iterable[int]) -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for pid in pids:
        stat = read_stat(pid)
        if stat is not None:
            tree.setdefault(stat.ppid, []).append(pid)
    return tree


def kill_tree(root: int, session_pids: Callable[[], list[int]],
              owns_cgroup: Callable[[str], bool]) -> list[int]:
    """SIGKILL ``root`` and its descendants among ``session_pids()``; returns pids hit."""
    killed: list[int] = []
    seen: set[int] = set()
    for _ in range(8):  # a forking tree may add children between rounds
        tree = _children(session_pids())
        todo = [root] if root not in seen else []
        targets: list[int] = []
        while todo:
            pid = todo.pop()
            if pid in targets:
                continue
            targets.append(pid)
            todo.extend(tree.get(pid, ()))
        fresh = [p for p in targets if p not in seen]
        if not fresh:
            break
        for pid in fresh:
            seen.add(pid)
            if _kill_checked(pid, owns_cgroup):
                killed.append(pid)
    return killed


def _kill_checked(pid: int, owns_cgroup: Callable[[str], bool]) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        cgroup = read_cgroup(pid)
        if cgroup is None or not owns_cgroup(cgroup):
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
