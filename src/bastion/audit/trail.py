"""``AuditTrail``: the append side of the audit log, with group commit.

Producers (the session thread, sensors, the gateway) hand records to one writer
thread per trail. The writer takes everything queued, assigns positions inside a
``BEGIN IMMEDIATE`` transaction (so several processes writing one run stay one
chain), extends the hash chain, commits (one WAL fsync for the whole batch) and only
then wakes the producers. A record is *acknowledged* when its producer is woken
without an error: from then on it survives SIGKILL and power loss.

Two ways to append:
  * ``append_event`` / ``append_verdict`` / ``append_policy``: return the record's
    position once it is durable (the ``EventRecorder`` protocol of ``Session``). Many
    threads appending at once share a commit, so latency stays one fsync.
  * ``submit_*``: return a ``Ticket`` at once; ``Ticket.wait()`` or ``flush()``
    acknowledges. This is the high-throughput path (benchmarks, bulk import).
    ``TrailConfig(durable_appends=False)`` makes ``append_*`` behave like this too,
    for producers that cannot afford an fsync per event.

Fail closed: the first failed commit or checkpoint export (disk full, database locked,
I/O error) raises ``AuditError`` to every producer of that batch and makes the trail
refuse all further appends; a record that cannot be encoded is refused to its producer
before it is queued. Nothing is dropped silently: a record is either acknowledged or
its producer (or, with queued appends, the next append) gets an exception.

Checkpoints are signed every ``checkpoint_every`` records, every
``checkpoint_interval`` seconds while records arrive, at each episode end (a
``closing``/``terminated`` lifecycle event, acknowledged only after its checkpoint is
exported) and on ``close()``.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..events import Event, EventKind, Verdict
from ..state import StateDir
from .chain import encode_body, encode_rest, genesis_head
from .checkpoint import Checkpoint, origin_for
from .errors import AuditError
from .keys import RunKey
from .sinks import CheckpointSink, DirectorySink, HttpSink
from .store import connect, db_path, run_stem

__all__ = [
    "EPISODE_END_STATES",
    "AuditTrail",
    "Ticket",
    "TrailConfig",
    "TrailStatistics",
    "default_sinks",
    "open_trail",
    "record_type",
]

# Lifecycle states after which an episode's records must be covered by a checkpoint.
EPISODE_END_STATES = frozenset({"closing", "closed", "terminated", "episode_end"})

_sha256 = hashlib.sha256


@dataclass(frozen=True)
class TrailConfig:
    checkpoint_every: int = 10_000  # records
    # seconds: records are never left unanchored (no exported checkpoint after them)
    # for longer than this, so a SIGKILL leaves at most ~1 s of records to the chain alone
    checkpoint_interval: float = 1.0
    busy_timeout_ms: int = 5_000  # how long to wait for another writer's lock
    wait_timeout: float = 60.0  # how long a producer waits for its commit
    # True: append_* return once the record is durable. False: they return once it is
    # queued (lower latency); a failed commit then fails the trail, and the *next*
    # append or flush raises, so a session still stops at its next event.
    durable_appends: bool = True
    # seconds a queued record nobody waits for may wait for company before the writer
    # commits it: the records of one tool call (its command, the sensors' exec, fork,
    # exit and resource events, its end) then share one transaction instead of one
    # commit each. Anyone who waits (flush, a durable append, Ticket.wait) has the
    # queue committed at once, so an acknowledgement is never delayed by it and a crash
    # still loses no acknowledged record. 0: commit whatever is queued at once.
    linger: float = 0.0
    # ... unless this many records are queued
    linger_records: int = 512


@dataclass(frozen=True)
class TrailStatistics:
    records: int  # appended by this trail object
    batches: int  # commits (= WAL fsyncs)
    checkpoints: int
    size: int  # records in the run's log after the last commit seen
    failed: str | None


class _Batch:
    __slots__ = ("done", "error", "first_seq", "urge")

    def __init__(self, urge: Callable[[_Batch], None] | None = None) -> None:
        self.done = threading.Event()
        self.first_seq = -1
        self.error: AuditError | None = None
        self.urge = urge  # someone waits: commit without lingering


class Ticket:
    """Queued records (``count`` of them, consecutive); ``wait()`` returns the position
    of the first once all are durable."""

    __slots__ = ("_batch", "_index", "_timeout", "count")

    def __init__(self, batch: _Batch, index: int, timeout: float, count: int = 1) -> None:
        self._batch = batch
        self._index = index
        self._timeout = timeout
        self.count = count

    @property
    def done(self) -> bool:
        return self._batch.done.is_set()

    def wait(self, timeout: float | None = None) -> int:
        batch = self._batch
        if batch.urge is not None and not batch.done.is_set():
            batch.urge(batch)
        if not batch.done.wait(self._timeout if timeout is None else timeout):
            raise AuditError("the audit writer did not commit in time; record not acknowledged")
        if batch.error is not None:
            raise batch.error
        return batch.first_seq + self._index


# (type, episode_id, canonical rest, episode end?, policy hash or None)
_Item = tuple[str, "str | None", bytes, bool, "str | None"]


def _event_data(event: Event) -> dict[str, Any]:
    """``event.to_dict()`` without its recursive copy of ``fields``: the encoder takes
    plain JSON values, tuples and enums as they are. Fields it refuses (bytes, sets,
    non-string keys) make ``_event_item`` fall back to ``to_dict()``'s conversion."""
    return {
        "id": event.id, "kind": event.kind.value, "session_id": event.session_id,
        "run_id": event.run_id, "episode_id": event.episode_id, "step": event.step,
        "call_id": event.call_id, "pid": event.pid, "ppid": event.ppid,
        "ancestry": event.ancestry, "ts": event.ts, "wall": event.wall,
        "fields": event.fields,
    }


def default_sinks(state: StateDir) -> list[CheckpointSink]:
    """The directory sink (``BASTION_CHECKPOINT_DIR``, default ``<state>/checkpoints``)
    plus an HTTP sink when ``BASTION_CHECKPOINT_URL`` is set."""
    directory = os.environ.get("BASTION_CHECKPOINT_DIR") or state.checkpoints
    sinks: list[CheckpointSink] = [DirectorySink(directory)]
    url = os.environ.get("BASTION_CHECKPOINT_URL")
    if url:
        sinks.append(HttpSink(url))
    return sinks


def record_type(event: Event) -> str:
    if event.kind is EventKind.LIFECYCLE:
        return "lifecycle"
    if event.kind is EventKind.ACTION:
        return "action"
    return "event"


class AuditTrail:
    """The audit log of one run, as written by this process."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None,
        run_id: str,
        *,
        sinks: Sequence[CheckpointSink] | None = None,
        config: TrailConfig | None = None,
    ) -> None:
        if not run_id:
            raise ValueError("an audit trail needs a run id")
        self.state = StateDir.resolve(state_dir)
        self.run_id = run_id
        self.stem = run_stem(run_id)
        self.origin = origin_for(self.stem)
        self.path: Path = db_path(self.state.audit, run_id)
        self.config = config or TrailConfig()
        self.sinks: list[CheckpointSink] = (
            list(sinks) if sinks is not None else default_sinks(self.state)
        )
        self.key = RunKey.load_or_create(self.state.keys, self.stem)
        self.genesis = genesis_head(run_id, self.key.public)
        self._pid = os.getpid()
        self._conn = connect(self.path, busy_timeout_ms=self.config.busy_timeout_ms)
        self._cond = threading.Condition()
        self._queue: list[_Item] = []
        self._queued_at = 0.0  # when the oldest queued record was queued
        self._urgent = False  # someone waits for the queue: no lingering
        self._batch = _Batch(self._urge)
        self._inflight: _Batch | None = None  # swapped out, being committed
        self._force_checkpoint = False
        self._closing = False
        self._closed = False
        self._failure: AuditError | None = None
        self._records = 0
        self._batches = 0
        self._checkpoints = 0
        self._size = 0
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        try:
            fresh = self._init_meta()
            for sink in self.sinks:
                sink.publish_key(self.stem, run_id, self.key.public_b64)
            self._policies = {row[0] for row in self._conn.execute("SELECT hash FROM policies")}
            if fresh:
                self._checkpoint()  # size 0: pins the genesis head outside the database
        except sqlite3.Error as exc:
            self._conn.close()
            raise AuditError(f"cannot initialise audit database {self.path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"audit-{self.stem}", daemon=True)
        self._thread.start()

    # -- setup ------------------------------------------------------------------------

    def _init_meta(self) -> bool:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            fresh = not meta
            if fresh:
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("format", "bastion-audit/1"),
                    ("run_id", self.run_id),
                    ("origin", self.origin),
                    ("public_key", self.key.public_b64),
                    ("key_type", "ed25519"),
                    ("created", f"{time.time():.6f}"),
                ])
            elif meta.get("run_id") != self.run_id:
                raise AuditError(f"{self.path} belongs to run {meta.get('run_id')!r}")
            elif meta.get("public_key") != self.key.public_b64:
                raise AuditError(
                    f"{self.path} was signed with another key than {self.key.path}; "
                    "refusing to extend it"
                )
            row = conn.execute("SELECT max(seq) FROM records").fetchone()
            self._size = 0 if row[0] is None else row[0] + 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return fresh

    # -- producers --------------------------------------------------------------------

    def _encode(self, type_: str, data: dict[str, Any]) -> bytes:
        """A record is ``{"seq", "type", "data"}``; events and verdicts carry their own
        attribution (run, episode, step, call) inside ``data``."""
        try:
            return encode_rest({"type": type_, "data": data})
        except (TypeError, ValueError) as exc:
            raise AuditError(f"cannot encode a {type_} record for the audit trail: {exc}") from exc

    def _submit(self, items: Sequence[_Item]) -> Ticket:
        if self._pid != os.getpid():
            raise AuditError("an audit trail cannot be used across fork(); open one per process")
        with self._cond:
            if self._failure is not None:
                raise AuditError(f"the audit trail failed earlier and refuses appends: "
                                 f"{self._failure}")
            if self._closing:
                raise AuditError("the audit trail is closed")
            ticket = Ticket(self._batch, len(self._queue), self.config.wait_timeout, len(items))
            if not self._queue:
                self._queued_at = time.monotonic()
                self._queue.extend(items)
                self._cond.notify()  # the writer starts its linger (or commits)
            else:
                self._queue.extend(items)
                if len(self._queue) >= self.config.linger_records:
                    self._cond.notify()
        return ticket

    def _urge(self, batch: _Batch) -> None:
        """Someone waits for ``batch``: if it is still being queued, commit it now."""
        with self._cond:
            if batch is self._batch and not self._urgent:
                self._urgent = True
                self._cond.notify()

    def _event_item(self, event: Event) -> _Item:
        type_ = record_type(event)
        try:
            rest = encode_rest({"type": type_, "data": _event_data(event)})
        except (TypeError, ValueError):
            rest = self._encode(type_, event.to_dict())
        end = type_ == "lifecycle" and event.fields.get("life.state") in EPISODE_END_STATES
        return (type_, event.episode_id or None, rest, end, None)

    def _verdict_item(self, verdict: Verdict) -> _Item:
        rest = self._encode("verdict", verdict.to_dict())
        return ("verdict", verdict.episode_id or None, rest, False, None)

    def submit_event(self, event: Event) -> Ticket:
        return self._submit([self._event_item(event)])

    def submit_verdict(self, verdict: Verdict) -> Ticket:
        return self._submit([self._verdict_item(verdict)])

    def submit_events(self, events: Iterable[Event]) -> Ticket:
        """Queue many events as consecutive records; one ticket for all of them."""
        return self._submit([self._event_item(e) for e in events])

    def append_event(self, event: Event) -> int | None:
        """Record an event (any kind; lifecycle and action events get their own record
        types) and return its position once durable (None when ``durable_appends`` is
        off). Raises AuditError."""
        ticket = self.submit_event(event)
        return ticket.wait() if self.config.durable_appends else None

    def append_verdict(self, verdict: Verdict) -> int | None:
        ticket = self.submit_verdict(verdict)
        return ticket.wait() if self.config.durable_appends else None

    def append_policy(self, policy: Any, *, episode_id: str | None = None) -> int | None:
        """Store a policy's text and hash, once per hash per run. Returns the position of
        the new record, or None if this run already holds that policy."""
        digest = str(policy.hash)
        with self._cond:
            if digest in self._policies:
                return None
            self._policies.add(digest)
        data = {"hash": digest, "name": str(policy.name), "text": policy.to_yaml(),
                "run_id": self.run_id, "episode_id": episode_id, "wall": time.time()}
        rest = self._encode("policy", data)
        try:
            return self._submit([("policy", episode_id, rest, False, digest)]).wait()
        except AuditError:
            with self._cond:
                self._policies.discard(digest)
            raise

    def flush(self, *, checkpoint: bool = False) -> int:
        """Wait until everything submitted so far is durable (and, with
        ``checkpoint=True``, covered by an exported checkpoint). Returns the log size."""
        with self._cond:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                return self._size
            batch = self._batch
            if checkpoint:
                self._force_checkpoint = True
            elif not self._queue:
                if self._inflight is None:
                    return self._size
                batch = self._inflight
            else:
                self._urgent = True
            self._cond.notify()
        Ticket(batch, 0, self.config.wait_timeout).wait()
        return self._size

    def commit_soon(self) -> None:
        """Start committing what is queued now, without waiting for it: for a
        producer that will ``flush`` shortly (a command about to run), so the commit
        overlaps what it does meanwhile instead of starting at the flush."""
        with self._cond:
            if self._queue and not self._urgent:
                self._urgent = True
                self._cond.notify()

    def checkpoint(self) -> int:
        """Sign and export a checkpoint now; returns its size."""
        return self.flush(checkpoint=True)

    def statistics(self) -> TrailStatistics:
        with self._cond:
            return TrailStatistics(self._records, self._batches, self._checkpoints,
                                   self._size, str(self._failure) if self._failure else None)

    @property
    def failed(self) -> AuditError | None:
        return self._failure

    def close(self) -> None:
        """Commit what is queued, write a final checkpoint, stop the writer. Idempotent."""
        with self._cond:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                self._cond.notify()
        if not already and self._pid == os.getpid():
            self._thread.join()
        with self._cond:
            if not self._closed:
                self._closed = True
                self._conn.close()
        _forget(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AuditTrail run={self.run_id} size={self._size} at {self.path}>"

    # -- the writer thread ----------------------------------------------------------

    def _due_by_time(self) -> bool:
        # a failed trail never checkpoints again: without this the writer would spin
        return (self._failure is None and self._since_checkpoint > 0 and
                time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval)

    def _lingering(self) -> float | None:
        """Seconds the queued records may still wait for company, or None when they
        are to be committed now (called with the condition held)."""
        linger = self.config.linger
        if (linger <= 0 or self._urgent or self._closing or self._force_checkpoint
                or self._failure is not None
                or len(self._queue) >= self.config.linger_records):
            return None
        left = self._queued_at + linger - time.monotonic()
        return left if left > 0 else None

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._queue:
                        left = self._lingering()
                        if left is None:
                            break
                        self._cond.wait(left)
                        continue
                    if self._closing or self._force_checkpoint or self._due_by_time():
                        break
                    wait = None
                    if self._since_checkpoint > 0 and self._failure is None:
                        wait = max(0.0, self._last_checkpoint + self.config.checkpoint_interval
                                   - time.monotonic())
                    self._cond.wait(wait)
                items, batch = self._queue, self._batch
                self._queue, self._batch = [], _Batch(self._urge)
                self._urgent = False
                self._inflight = batch
                force, self._force_checkpoint = self._force_checkpoint, False
                closing = self._closing
                failed = self._failure
            if failed is not None:
                batch.error = failed
            else:
                self._process(items, batch, force, closing)
            with self._cond:
                self._inflight = None
            batch.done.set()
            if closing:
                with self._cond:
                    if not self._queue:
                        return

    def _process(self, items: list[_Item], batch: _Batch, force: bool, closing: bool) -> None:
        try:
            if items:
                batch.first_seq = self._commit(items)
            due = (closing or any(item[3] for item in items) or self._due_by_time()
                   or self._since_checkpoint >= self.config.checkpoint_every)
            if force or (due and self._since_checkpoint > 0):
                self._checkpoint()
        except AuditError as exc:
            self._fail(exc, batch)
        except Exception as exc:  # noqa: BLE001 - every failure fails the trail, closed
            lost = f"{len(items)} record(s) not recorded" if batch.first_seq < 0 else \
                "records committed but their checkpoint failed"
            self._fail(AuditError(f"audit append failed ({lost}): {exc}"), batch)

    def _fail(self, error: AuditError, batch: _Batch) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = error
        batch.error = error

    def _commit(self, items: list[_Item]) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT seq, head FROM records ORDER BY seq DESC LIMIT 1"
                               ).fetchone()
            seq, head = (0, self.genesis) if row is None else (row[0] + 1, row[1])
            first = seq
            rows = []
            episodes: dict[str, list[int]] = {}
            policies = []
            sha = _sha256
            for type_, episode, rest, _end, policy in items:
                body = encode_body(seq, rest)
                head = sha(b"\x01" + head + sha(b"\x00" + body).digest()).digest()
                rows.append((seq, type_, episode, body, head))
                if episode is not None:
                    span = episodes.get(episode)
                    if span is None:
                        episodes[episode] = [seq, seq, 1]
                    else:
                        span[1] = seq
                        span[2] += 1
                if policy is not None:
                    policies.append((policy, seq))
                seq += 1
            conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", rows)
            if episodes:
                conn.executemany(
                    "INSERT INTO episodes VALUES (?, ?, ?, ?) ON CONFLICT(episode_id) DO "
                    "UPDATE SET last_seq = excluded.last_seq, records = records + excluded.records",
                    [(ep, a, b, n) for ep, (a, b, n) in episodes.items()])
            if policies:
                conn.executemany("INSERT OR IGNORE INTO policies VALUES (?, ?)", policies)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the failure being raised is the one that matters
            raise
        with self._cond:
            self._size = seq
            self._records += len(items)
            self._batches += 1
            self._since_checkpoint += len(items)
        return first

    def _checkpoint(self) -> None:
        row = self._conn.execute("SELECT seq, head FROM records ORDER BY seq DESC LIMIT 1"
                                 ).fetchone()
        size, head = (0, self.genesis) if row is None else (row[0] + 1, row[1])
        checkpoint = Checkpoint.sign(self.origin, size, head, self.key)
        self._conn.execute("INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?)",
                           (size, head, checkpoint.note()))
        for sink in self.sinks:
            sink.publish(self.stem, checkpoint)
        with self._cond:
            self._checkpoints += 1
            self._since_checkpoint = 0
            self._last_checkpoint = time.monotonic()


# -- one trail per (state dir, run) per process ----------------------------------------

_TRAILS: dict[tuple[int, Path, str], AuditTrail] = {}
_TRAILS_LOCK = threading.Lock()


def open_trail(
    state_dir: str | os.PathLike[str] | None,
    run_id: str,
    *,
    sinks: Sequence[CheckpointSink] | None = None,
    config: TrailConfig | None = None,
) -> AuditTrail:
    """The process's trail for ``run_id`` in ``state_dir`` (opened on first use).

    Every session of a run in this process shares one trail, hence one writer thread
    and one group commit. Trails are flushed, checkpointed and closed at exit. A trail
    that failed stays failed (every session using it was stopped); the next call opens
    a fresh one, which resumes the chain if the cause (a full disk, a lock) is gone.
    """
    root = StateDir.resolve(state_dir).root
    key = (os.getpid(), root, run_id)
    with _TRAILS_LOCK:
        trail = _TRAILS.get(key)
        if trail is not None and trail.failed is not None:
            stale, trail = trail, None
            del _TRAILS[key]
        else:
            stale = None
    if stale is not None:
        stale.close()
    with _TRAILS_LOCK:
        trail = _TRAILS.get(key)
        if trail is None or trail._closing:
            trail = _TRAILS[key] = AuditTrail(root, run_id, sinks=sinks, config=config)
        return trail


_LEASES: dict[int, int] = {}  # id(trail) -> sessions using it


def lease_trail(state_dir: str | os.PathLike[str] | None, run_id: str, *,
                config: TrailConfig | None = None) -> AuditTrail:
    """``open_trail`` for a session: the trail is closed (final checkpoint, writer
    thread ended) when the last session that leased it calls ``release_trail``, so a
    process that runs many runs does not keep a writer per finished run."""
    trail = open_trail(state_dir, run_id, config=config)
    with _TRAILS_LOCK:
        _LEASES[id(trail)] = _LEASES.get(id(trail), 0) + 1
    return trail


def release_trail(trail: AuditTrail) -> None:
    with _TRAILS_LOCK:
        left = _LEASES.get(id(trail), 1) - 1
        if left > 0:
            _LEASES[id(trail)] = left
            return
        _LEASES.pop(id(trail), None)
        for key, value in list(_TRAILS.items()):
            if value is trail:
                del _TRAILS[key]  # the next lease of this run opens a fresh trail
    trail.close()


def _forget(trail: AuditTrail) -> None:
    with _TRAILS_LOCK:
        for key, value in list(_TRAILS.items()):
            if value is trail:
                del _TRAILS[key]


@atexit.register
def _close_all() -> None:
    with _TRAILS_LOCK:
        trails = [t for k, t in _TRAILS.items() if k[0] == os.getpid()]
    for trail in trails:
        trail.close()
