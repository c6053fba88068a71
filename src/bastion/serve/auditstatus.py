"""The audit trail's health, per run: how many records, the last signed checkpoint
and its age, how many records no checkpoint covers yet (the unanchored tail), and the
result of the last full ``verify``.

Checkpoint facts are read from the run's ``checkpoints`` table (cheap, every request);
``verify`` re-hashes the whole chain, so it runs in the background every
``verify_interval`` seconds (and on demand) and its last result is what is reported.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..audit.checkpoint import Checkpoint
from ..audit.errors import AuditError
from ..audit.store import connect
from ..audit.verify import RunVerification, verify_state_dir
from ..state import StateDir

__all__ = ["AuditStatus", "CheckpointInfo", "Verifier", "checkpoint_info"]


@dataclass(frozen=True)
class CheckpointInfo:
    records: int  # the log's size now
    checkpoint_size: int | None  # size the newest checkpoint commits to
    checkpoint_time: float | None  # when it was signed (wall clock)

    @property
    def unanchored(self) -> int:
        return self.records - (self.checkpoint_size or 0)

    def age(self, now: float | None = None) -> float | None:
        if self.checkpoint_time is None:
            return None
        return max(0.0, (now or time.time()) - self.checkpoint_time)


def checkpoint_info(path: Path) -> CheckpointInfo:
    """Size and newest checkpoint of one run's log. Raises AuditError."""
    conn = connect(path, readonly=True)
    try:
        row = conn.execute("SELECT max(seq) FROM records").fetchone()
        size = 0 if row[0] is None else int(row[0]) + 1
        cp = conn.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
                          ).fetchone()
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
    if cp is None:
        return CheckpointInfo(size, None, None)
    try:
        signed = Checkpoint.parse(cp[1]).time_ms / 1000.0
    except ValueError:
        signed = None  # verify names what is wrong with it
    return CheckpointInfo(size, int(cp[0]), signed)


@dataclass(frozen=True)
class AuditStatus:
    run_id: str
    checkpoint: CheckpointInfo
    verification: RunVerification | None
    verified_at: float | None


class Verifier:
    """Runs ``verify_state_dir`` in a background thread and keeps the last result."""

    def __init__(self, state: StateDir, interval: float, min_gap: float = 5.0) -> None:
        self.state = state
        self.interval = interval
        self.min_gap = min_gap  # between verifies asked for by request()
        self._lock = threading.Lock()
        self._results: dict[str, RunVerification] = {}
        self._at: float | None = None
        self._error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bastion-serve-verify",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def verify_now(self) -> None:
        """Verify every run now, on the calling thread."""
        try:
            results = verify_state_dir(self.state.root, workers=1)
            error = None
        except AuditError as exc:
            results, error = [], str(exc)
        with self._lock:
            self._results = {r.run_id: r for r in results}
            self._at = time.time()
            self._error = error

    def request(self) -> None:
        """Verify soon (a new run appeared, an episode ended on a checkpoint), but not
        sooner than ``min_gap`` after the last verify."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.verify_now()
            self._wake.wait(self.interval)
            if self._stop.is_set():
                return
            self._wake.clear()
            self._stop.wait(max(0.0, started + self.min_gap - time.monotonic()))

    def result(self, run_id: str) -> tuple[RunVerification | None, float | None]:
        with self._lock:
            return self._results.get(run_id), self._at

    @property
    def error(self) -> str | None:
        with self._lock:
            return self._error
