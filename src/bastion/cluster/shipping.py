"""Records that travel from a node service back to the run's audit trail.

A session on a Ray node records into a ``ShippingRecorder``: every event and verdict
is kept, in order, as its JSON form (``to_dict``), until the driver drains it and
appends it to the run's trail with ``Event.from_dict``/``Verdict.from_dict``, so run,
episode, step, call and session ids arrive exactly as the node saw them.

Durable like the local trail: every record is also written to a spool file on the
node (``<spool_dir>/<node>-<pid>-<n>.jsonl``), and ``flush`` returns only once the
spool is fsync'd, so "a command never runs before its records are durable" holds on
cluster nodes too (the session flushes before each call starts). A node process that
dies leaves its spool behind; ``recover`` reads it back for the driver to deliver. A
spool that cannot be written (full disk, I/O error) raises ``AuditError`` from the
append or, at the latest, from the next ``flush``: the session stops, nothing is
dropped silently. ``acknowledge`` (after the driver delivered what it drained)
empties the spool of what the run's trail now holds.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import orjson

from ..audit.errors import AuditError
from ..contracts import EventRecorder
from ..events import Event, Verdict
from ..state import DEFAULT_STATE_DIR

__all__ = ["Shipped", "ShippingRecorder", "deliver", "recover"]

Shipped = tuple[Literal["event", "verdict"], dict[str, Any]]

_serial = itertools.count()


def _default_spool() -> Path:
    return Path(os.environ.get("BASTION_STATE_DIR") or DEFAULT_STATE_DIR) / "spool"


class ShippingRecorder:
    """``EventRecorder`` that spools records on the node and buffers them for
    shipping. Thread-safe."""

    def __init__(self, node_id: str, *, spool_dir: str | os.PathLike[str] | None = None) -> None:
        self.node_id = node_id
        self._buffer: list[Shipped] = []
        self._lock = threading.Lock()
        self.shipped = 0
        self._failure: AuditError | None = None
        directory = Path(spool_dir) if spool_dir is not None else _default_spool()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node_id)[:64]
            self.spool = directory / f"{safe}-{os.getpid()}-{next(_serial)}.jsonl"
            self._fd = os.open(self.spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                               0o600)
        except OSError as exc:
            raise AuditError(f"cannot open the node's audit spool in {directory}: {exc}") from exc
        self._dirty = False
        self._spooled = 0  # records in the spool file

    def _append(self, kind: Literal["event", "verdict"], data: dict[str, Any]) -> None:
        line = orjson.dumps([kind, data]) + b"\n"
        with self._lock:
            if self._failure is not None:
                raise self._failure
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                self._failure = AuditError(f"the node's audit spool {self.spool} failed: {exc}")
                raise self._failure from exc
            self._buffer.append((kind, data))
            self._spooled += 1
            self._dirty = True

    def append_event(self, event: Event) -> None:
        self._append("event", event.to_dict())

    def append_verdict(self, verdict: Verdict) -> None:
        self._append("verdict", verdict.to_dict())

    def append_policy(self, policy: Any, *, episode_id: str) -> None:
        """The policy text is recorded by the run's trail on the driver, not shipped."""

    def flush(self, *, checkpoint: bool = False) -> None:
        """Return once every record appended so far is on the node's disk. (The
        run's checkpoints are signed by the driver's trail when it delivers.)"""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if not self._dirty:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._failure = AuditError(f"the node's audit spool {self.spool} failed: {exc}")
                raise self._failure from exc
            self._dirty = False

    def drain(self) -> list[Shipped]:
        with self._lock:
            out, self._buffer = self._buffer, []
            self.shipped += len(out)
        return out

    @property
    def spooled(self) -> int:
        """Records in the spool file: appended and not yet acknowledged."""
        with self._lock:
            return self._spooled

    def acknowledge(self) -> None:
        """The driver delivered everything drained so far into the run's trail: keep
        only what is still waiting in the spool."""
        with self._lock:
            pending = [orjson.dumps(list(item)) + b"\n" for item in self._buffer]
            try:
                os.ftruncate(self._fd, 0)
                for line in pending:
                    os.write(self._fd, line)
                os.fsync(self._fd)
            except OSError as exc:
                self._failure = AuditError(f"the node's audit spool {self.spool} failed: {exc}")
                raise self._failure from exc
            self._spooled = len(pending)
            self._dirty = False

    def close(self) -> None:
        """Close the spool; it is removed when nothing in it is waiting for the driver."""
        with self._lock:
            if self._fd < 0:
                return
            os.close(self._fd)
            self._fd = -1
            if not self._buffer:
                self.spool.unlink(missing_ok=True)


def recover(spool: str | os.PathLike[str]) -> list[Shipped]:
    """The records in a dead node process's spool, in order (a torn last line, from a
    crash mid-write, was never acknowledged to anyone and is skipped)."""
    out: list[Shipped] = []
    for line in Path(spool).read_bytes().splitlines():
        try:
            kind, data = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        out.append((kind, data))
    return out


def deliver(records: Iterable[Shipped], recorder: EventRecorder) -> int:
    """Append shipped records to the run's recorder, in order. Raises whatever the
    recorder raises (an audit trail that cannot record stops the run)."""
    count = 0
    for kind, data in records:
        if kind == "event":
            recorder.append_event(Event.from_dict(data))
        else:
            recorder.append_verdict(Verdict.from_dict(data))
        count += 1
    return count
