"""Quarantine: keep what a frozen session had, for forensics, before it is ended.

Written to ``<state_dir>/quarantine/<session_id>/``:

* ``processes.json``: every process of the (frozen) session as /proc shows it;
* ``workspace/``: a copy of the workspace, regular files, directories and symlinks
  (as links, never followed), bounded in size: the agent controls the workspace and
  must not be able to fill the host's disk through a quarantine;
* ``manifest.json``: the verdict, what was copied, what was skipped and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..sensors.procfs import read_process

__all__ = ["MAX_QUARANTINE_BYTES", "quarantine"]

MAX_QUARANTINE_BYTES = 256 * 1024 * 1024


def _copy_workspace(src: Path, dst: Path, budget: int) -> dict[str, Any]:
    copied = skipped = 0
    used = 0
    reasons: list[str] = []
    dst.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(src, followlinks=False):
        rel = Path(root).relative_to(src)
        target_dir = dst / rel
        for name in dirs:
            path = Path(root) / name
            if path.is_symlink():
                os.symlink(os.readlink(path), target_dir / name)
            else:
                (target_dir / name).mkdir(exist_ok=True)
        for name in files:
            path = Path(root) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), target_dir / name)
                copied += 1
            elif not stat.S_ISREG(st.st_mode):
                skipped += 1
                reasons.append(f"{rel / name}: not a regular file")
            elif used + st.st_size > budget:
                skipped += 1
                reasons.append(f"{rel / name}: over the {budget}-byte quarantine budget")
            else:
                _copy_regular(path, target_dir / name)
                used += st.st_size
                copied += 1
    return {"files_copied": copied, "files_skipped": skipped, "bytes": used,
            "skipped": reasons[:1000]}


def _copy_regular(src: Path, dst: Path) -> None:
    # O_NOFOLLOW: the agent may swap the file for a link between lstat and open
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _background_priority() -> Iterator[None]:
    """Run the copy at the lowest CPU priority (per thread on Linux): it is forensic
    background work, and the sensor threads serving every other session must not
    wait for a core behind it."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, 19)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # raising it back needs CAP_SYS_NICE
            os.setpriority(os.PRIO_PROCESS, tid, before)


def quarantine(*, root: Path, session_id: str, workspace: Path, pids: Iterable[int],
               verdict: Mapping[str, Any], budget: int = MAX_QUARANTINE_BYTES) -> Path:
    """Copy the evidence of a (frozen) session; returns the quarantine directory."""
    with _background_priority():
        return _quarantine(root=root, session_id=session_id, workspace=workspace, pids=pids,
                           verdict=verdict, budget=budget)


def _quarantine(*, root: Path, session_id: str, workspace: Path, pids: Iterable[int],
                verdict: Mapping[str, Any], budget: int) -> Path:
    dest = root / "quarantine" / session_id
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    processes = [asdict(read_process(pid)) for pid in sorted(set(pids))]
    (dest / "processes.json").write_text(json.dumps(processes, indent=1))
    copy = _copy_workspace(workspace, dest / "workspace", budget)
    manifest = {"session_id": session_id, "time": time.time(), "verdict": dict(verdict),
                "workspace": str(workspace), "processes": len(processes), **copy}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return dest
