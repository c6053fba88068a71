"""``verify``: check a run's log against its hash chain, its signed checkpoints and the
checkpoints exported outside the database, and name the first thing that is wrong.

What is checked, in this order (the first problem found is reported):

1. SQLite's own ``quick_check``: a damaged file is "corrupt", which takes precedence
   over anything else found (it runs beside the chain scan).
2. The key: the run's public key is *pinned* from outside the database when possible
   (``--public-key``, the sink's ``run.json``, or the private key file); a database
   that names another key is "wrong key".
3. Every checkpoint note, in the database and exported: a note under another key is
   "wrong key"; one that claims our key but does not verify is "forged signature".
4. The chain, record by record: ``seq`` contiguous from 0, each head recomputed from
   the previous head and the stored body. The first failing position is then
   classified by looking at the ``seq`` each nearby body *claims*: a gap or a body
   claiming a later position with no record claiming this one is "deleted"; a body
   claiming an earlier position, or two bodies claiming one position, is "inserted";
   two records holding each other's positions is "reordered"; anything else is
   "modified".
5. The chain against each valid checkpoint: a checkpoint larger than the log is
   "truncated"; one whose head differs from the recomputed head at its size means
   records before it were rewritten ("modified", with the range it narrows to).
6. Every column and table a reader narrows by, against the signed bodies: the
   ``type`` and ``episode_id`` columns of each record, the ``episodes`` spans and the
   ``policies`` index. Anyone who can drop the append-only triggers can change them
   without touching a hash; a reader that trusted them would miss a verdict whose
   type column says ``event``. A mismatch is "modified" at that record.
7. The unanchored tail: records after the latest *exported* checkpoint are protected
   by the chain alone (a host root can truncate them and the checkpoint after them
   together). They are reported exactly (positions and time span); with
   ``require_anchor`` they are a failure ("unanchored").

The chain scan is the hot loop (two SHA-256 per record). Large logs are split into
ranges checked in parallel processes, each starting from the stored head before its
range: if every range checks, every stored head equals the recomputed one, so the
split changes nothing about what is proven.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import multiprocessing
import os
import sqlite3
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..state import StateDir
from .chain import claimed_seq, genesis_head
from .checkpoint import Checkpoint, origin_for
from .errors import AuditError
from .keys import RunKey, public_key_from_b64
from .sinks import ExternalRun, read_external
from .store import connect, list_run_dbs

__all__ = ["KINDS", "Problem", "RunVerification", "verify_run", "verify_state_dir"]

KINDS = ("modified", "deleted", "inserted", "reordered", "truncated", "forged signature",
         "wrong key", "corrupt", "unanchored")

_PARALLEL_MIN = 200_000  # below this, forking workers costs more than it saves


@dataclass(frozen=True)
class Problem:
    kind: str  # one of KINDS
    seq: int | None  # the first bad record, when the problem is a record
    detail: str

    def __str__(self) -> str:
        where = f" at record {self.seq}" if self.seq is not None else ""
        return f"{self.kind}{where}: {self.detail}"


@dataclass(frozen=True)
class RunVerification:
    run_id: str
    path: str
    records: int
    checkpoints: int  # valid checkpoints checked (database + exported)
    exported: int  # of which exported
    latest_exported: int | None  # size of the largest exported checkpoint
    key_source: str
    seconds: float
    problem: Problem | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            return f"FAIL {self.run_id}: {self.problem}"
        latest = "none" if self.latest_exported is None else str(self.latest_exported)
        return (f"OK   {self.run_id}: {self.records} records, {self.checkpoints} checkpoints "
                f"verified (latest exported: {latest}), key pinned from {self.key_source}")


# -- the chain scan ---------------------------------------------------------------------


def _open_ro(path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


def _scan(path: str, start: int, stop: int, prev: bytes) -> int | None:
    """First position in [start, stop) whose record is missing or does not chain.

    When the range holds exactly ``stop - start`` records (``seq`` is the primary key,
    so they are then exactly the positions of the range) the loop skips the per-row
    position check; otherwise, or on a value of the wrong type, the checked loop finds
    whichever comes first, the gap or the break."""
    conn = _open_ro(path)
    try:
        count = conn.execute("SELECT count(*) FROM records WHERE seq >= ? AND seq < ?",
                             (start, stop)).fetchone()[0]
        if count != stop - start:
            return _scan_checked(conn, start, stop, prev)
        sha = hashlib.sha256
        cur = conn.execute("SELECT body, head FROM records WHERE seq >= ? AND seq < ? "
                           "ORDER BY seq", (start, stop))
        base, chunk_prev = start, prev
        try:
            while rows := cur.fetchmany(65536):
                for body, head in rows:
                    prev = sha(b"\x01" + prev + sha(b"\x00" + body).digest()).digest()
                    if prev != head:
                        break
                else:
                    base += len(rows)
                    chunk_prev = prev
                    continue
                break  # locate the break exactly, with positions
            else:
                return None
        except TypeError:
            pass
        return _scan_checked(conn, base, stop, chunk_prev)
    finally:
        conn.close()


def _scan_checked(conn: sqlite3.Connection, start: int, stop: int, prev: bytes) -> int | None:
    sha = hashlib.sha256
    expected = start
    cur = conn.execute("SELECT seq, body, head FROM records WHERE seq >= ? AND seq < ? "
                       "ORDER BY seq", (start, stop))
    try:
        while rows := cur.fetchmany(65536):
            for seq, body, head in rows:
                if seq != expected:
                    return expected
                prev = sha(b"\x01" + prev + sha(b"\x00" + body).digest()).digest()
                if prev != head:
                    return seq
                expected += 1
    except TypeError:
        return expected  # a body stored as text or NULL: not what the writer wrote
    return None if expected == stop else expected


def _quick_check(path: str) -> str:
    try:
        conn = _open_ro(path)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
        return "; ".join(str(r[0]) for r in rows[:5])
    except sqlite3.Error as exc:
        return str(exc)


class _Work:
    """Where the heavy checks run. Small logs: the chain in this thread and SQLite's
    ``quick_check`` in a second one (it releases the GIL). Large logs: both in a pool
    of forked processes, created before this process starts any thread of its own,
    so no child inherits a lock held mid-operation."""

    def __init__(self, path: Path, stop: int, workers: int) -> None:
        self.path = str(path)
        self.workers = workers if stop >= _PARALLEL_MIN else 1
        self.pool: ProcessPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._integrity = "not run"
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(max_workers=self.workers,
                                            mp_context=multiprocessing.get_context("fork"))
            self._future = self.pool.submit(_quick_check, self.path)
        else:
            self._thread = threading.Thread(target=self._check, name="audit-quick-check",
                                            daemon=True)
            self._thread.start()

    def _check(self) -> None:
        self._integrity = _quick_check(self.path)

    def integrity(self) -> str:
        if self.pool is not None:
            return self._future.result()
        assert self._thread is not None
        self._thread.join()
        return self._integrity

    def first_bad(self, conn: sqlite3.Connection, stop: int, genesis: bytes) -> int | None:
        if stop == 0:
            return None
        if self.pool is None:
            return _scan(self.path, 0, stop, genesis)
        bounds = [stop * i // self.workers for i in range(self.workers + 1)]
        starts = []
        for start in bounds[:-1]:
            if start == 0:
                starts.append(genesis)
            else:
                row = conn.execute("SELECT head FROM records WHERE seq = ?",
                                   (start - 1,)).fetchone()
                # a missing boundary record is reported by the range before it
                starts.append(row[0] if row else b"\x00" * 32)
        futures = [self.pool.submit(_scan, self.path, bounds[i], bounds[i + 1], starts[i])
                   for i in range(self.workers)]
        bad = [r for r in (f.result() for f in futures) if r is not None]
        return min(bad) if bad else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        elif self._thread is not None:
            self._thread.join()


def _claimed(conn: sqlite3.Connection, seq: int) -> int | None:
    row = conn.execute("SELECT body FROM records WHERE seq = ?", (seq,)).fetchone()
    return claimed_seq(row[0]) if row and isinstance(row[0], bytes) else None


def _who_claims(conn: sqlite3.Connection, position: int, after: int) -> int | None:
    prefix = b'{"seq":%d,' % position
    row = conn.execute(
        "SELECT seq FROM records WHERE seq > ? AND substr(body, 1, ?) = ? ORDER BY seq LIMIT 1",
        (after, len(prefix), prefix)).fetchone()
    return row[0] if row else None


def _classify(conn: sqlite3.Connection, p: int) -> Problem:
    """Name what happened at the first failing position ``p``."""
    row = conn.execute("SELECT seq, body FROM records WHERE seq >= ? ORDER BY seq LIMIT 1",
                       (p,)).fetchone()
    if row is None or row[0] != p:
        nxt = "the end" if row is None else f"record {row[0]}"
        return Problem("deleted", p, f"record {p} is missing (the log skips from {p - 1} "
                                     f"to {nxt})")
    claimed = claimed_seq(row[1]) if isinstance(row[1], bytes) else None
    if claimed is None:
        return Problem("modified", p, "the stored record is not a well-formed audit record")
    if claimed < p:
        return Problem("inserted", claimed,
                       f"record {p} holds the content written as record {claimed}: "
                       f"{p - claimed} record(s) were inserted at {claimed}")
    if claimed > p:
        holder = _who_claims(conn, p, p)
        if holder is not None:
            return Problem("reordered", p,
                           f"record {p} holds the content written as record {claimed}, and "
                           f"record {holder} holds the content written as record {p}")
        return Problem("deleted", p,
                       f"record {p} holds the content written as record {claimed}: "
                       f"{claimed - p} record(s) were deleted and later ones renumbered")
    if _claimed(conn, p + 1) == p:
        return Problem("inserted", p,
                       f"record {p} was inserted: the next record holds the content "
                       f"originally written as record {p}")
    return Problem("modified", p, "the record's content no longer matches its hash chain")


# -- what readers narrow by ---------------------------------------------------------------

# One pass over the records for both columns. The episode check must not parse JSON:
# keys are sorted and "data" comes first, so the first `"episode_id":` in a body is the
# data-level key (a string value cannot hold an unescaped quote). Rows this byte-level
# test flags (an id with characters JSON escapes, too) are confirmed with json_extract.
_EP_KEY = "X'22657069736f64655f6964223a'"  # "episode_id":
_COLUMN_SUSPECTS = f"""
SELECT seq, type, episode_id FROM (
    SELECT seq, type, episode_id, body, instr(body, {_EP_KEY}) AS at FROM records)
WHERE CAST(substr(body, -(length(CAST(type AS BLOB)) + 10)) AS TEXT)
      IS NOT ('"type":"' || type || '"}}')
   OR CASE WHEN episode_id IS NULL OR episode_id = ''
      THEN at > 0 AND CAST(substr(body, at + 13, 2) AS TEXT) NOT IN ('nu', '""')
      ELSE at = 0 OR CAST(substr(body, at + 13, length(CAST(episode_id AS BLOB)) + 3) AS TEXT)
                     NOT IN ('"' || episode_id || '",', '"' || episode_id || '"}}')
      END
ORDER BY seq"""
_EPISODE_CONFIRM = """
SELECT 1 FROM records WHERE seq = ? AND NULLIF(episode_id, '') IS NOT
      NULLIF(json_extract(CAST(body AS TEXT), '$.data.episode_id'), '')"""
# the episode index against the records, both ways, from one aggregate
_SPAN_MISMATCH = """
WITH r AS MATERIALIZED (SELECT episode_id, min(seq) a, max(seq) b, count(*) n FROM records
                        WHERE episode_id IS NOT NULL GROUP BY episode_id)
SELECT e.episode_id, e.first_seq, e.last_seq, e.records, r.a, r.b, r.n
FROM episodes e LEFT JOIN r ON r.episode_id = e.episode_id
WHERE r.a IS NOT e.first_seq OR r.b IS NOT e.last_seq OR r.n IS NOT e.records
UNION ALL
SELECT r.episode_id, NULL, NULL, NULL, r.a, r.b, r.n FROM r
WHERE r.episode_id NOT IN (SELECT episode_id FROM episodes)
LIMIT 1"""
_POLICY_MISMATCH = """
SELECT p.hash, p.seq FROM policies p LEFT JOIN records r ON r.seq = p.seq
WHERE r.type IS NOT 'policy'
   OR json_extract(CAST(r.body AS TEXT), '$.data.hash') IS NOT p.hash LIMIT 1"""


def _body_field(conn: sqlite3.Connection, seq: int, path: str) -> object:
    row = conn.execute("SELECT json_extract(CAST(body AS TEXT), ?) FROM records WHERE seq = ?",
                       (path, seq)).fetchone()
    return row[0] if row else None


def _index_problem(conn: sqlite3.Connection) -> Problem | None:
    """The first column or index entry that disagrees with the signed bodies."""
    for seq, type_, episode in conn.execute(_COLUMN_SUSPECTS).fetchall():
        body_type = _body_field(conn, seq, "$.type")
        if body_type != type_:
            return Problem("modified", seq,
                           f"the type column of record {seq} says {type_!r} but its signed "
                           f"body says {body_type!r}")
        if conn.execute(_EPISODE_CONFIRM, (seq,)).fetchone() is not None:
            return Problem("modified", seq,
                           f"the episode_id column of record {seq} says {episode!r} but its "
                           f"signed body says {_body_field(conn, seq, '$.data.episode_id')!r}")
    row = conn.execute(_SPAN_MISMATCH).fetchone()
    if row is not None and row[1] is None:
        return Problem("modified", row[4],
                       f"episode {row[0]!r} (from record {row[4]}) is missing from the "
                       "episode index")
    if row is not None:
        return Problem("modified", row[4] if row[4] is not None else row[1],
                       f"the episode index says episode {row[0]!r} spans records "
                       f"{row[1]}..{row[2]} ({row[3]}), but its records are "
                       f"{row[4]}..{row[5]} ({row[6]})")
    row = conn.execute(_POLICY_MISMATCH).fetchone()
    if row is not None:
        return Problem("modified", row[1],
                       f"the policy index points policy {row[0]} at record {row[1]}, which "
                       "is not that policy")
    return None


class _IndexCheck:
    """``_index_problem`` on its own connection and thread, beside the chain scan
    (SQLite releases the GIL while a query runs, so on two cores it costs ~nothing)."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)
        self._result: Problem | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="audit-index-check",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = _open_ro(self._path)
            try:
                self._result = _index_problem(conn)
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc

    def result(self) -> Problem | None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


def _tail(conn: sqlite3.Connection, start: int, stop: int) -> str:
    """Records start..stop-1, exactly, with the time they span."""
    first = _body_field(conn, start, "$.data.wall")
    last = _body_field(conn, stop - 1, "$.data.wall")
    span = ""
    if isinstance(first, (int, float)) and isinstance(last, (int, float)):
        span = f", {max(0.0, last - first):.2f} s of activity"
    return f"{stop - start} record(s) (seq {start}..{stop - 1}{span})"


# -- keys and checkpoints ------------------------------------------------------------------


def _pin_key(state: StateDir, stem: str, explicit: bytes | None,
             external: ExternalRun | None, stored: bytes, notes: list[str]) -> tuple[bytes, str]:
    if explicit is not None:
        return explicit, "--public-key"
    if external is not None and external.public_key_b64:
        return public_key_from_b64(external.public_key_b64), "the checkpoint sink"
    key_file = state.keys / f"{stem}.ed25519"
    if key_file.exists():
        return RunKey.load(key_file).public, f"the run's key file ({key_file})"
    notes.append("no key outside the database: trusting the key the database names")
    return stored, "the database (unpinned)"


def verify_run(
    path: Path,
    *,
    state: StateDir,
    external: ExternalRun | None = None,
    public_key: bytes | None = None,
    workers: int | None = None,
    require_anchor: bool = False,
) -> RunVerification:
    """``require_anchor``: records after the latest exported checkpoint are a
    failure ("unanchored") rather than a note."""
    started = time.perf_counter()
    conn = connect(path, readonly=True)
    notes: list[str] = []
    run_id = path.stem
    work: _Work | None = None
    index_check: _IndexCheck | None = None

    def done(problem: Problem | None, records: int = 0, checked: int = 0,
             exported: int = 0, latest: int | None = None, source: str = "") -> RunVerification:
        # a damaged file explains everything else that was found: it takes precedence
        integrity = work.integrity() if work is not None else "ok"
        if integrity != "ok":
            problem = Problem("corrupt", None, f"the database is damaged: {integrity}")
        return RunVerification(run_id, str(path), records, checked, exported, latest,
                               source, time.perf_counter() - started, problem, tuple(notes))

    try:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            row = conn.execute("SELECT max(seq) FROM records").fetchone()
        except sqlite3.DatabaseError as exc:
            return done(Problem("corrupt", None, f"cannot read the run's tables: {exc}"))
        stop = 0 if row[0] is None else row[0] + 1
        work = _Work(path, stop, workers if workers is not None
                     else min(os.cpu_count() or 1, 8))
        index_check = _IndexCheck(path)
        run_id = meta.get("run_id", path.stem)
        if "public_key" not in meta:
            return done(Problem("corrupt", None, "run metadata is missing"))
        stem = path.stem
        stored_key = public_key_from_b64(meta["public_key"])
        pinned, source = _pin_key(state, stem, public_key, external, stored_key, notes)
        if stored_key != pinned:
            return done(Problem("wrong key", None,
                                f"the database names key {meta['public_key']} but the run's key "
                                f"(from {source}) is {base64.b64encode(pinned).decode()}"),
                        source=source)

        # checkpoints: signature and key first
        origin = origin_for(stem)
        candidates: list[tuple[str, str, bool]] = [
            (f"checkpoint {size} in the database", note, False)
            for size, note in conn.execute("SELECT size, note FROM checkpoints ORDER BY size")]
        if external is not None:
            candidates += [(f"exported checkpoint {where}", note, True)
                           for where, note in external.notes]
        valid: list[tuple[str, Checkpoint, bool]] = []
        bad: list[tuple[int, Problem]] = []
        for where, note, is_external in candidates:
            try:
                cp = Checkpoint.parse(note)
            except ValueError as exc:
                bad.append((-1, Problem("forged signature", None, f"{where} is malformed: {exc}")))
                continue
            issue = cp.problem(pinned) or (None if cp.origin == origin else "wrong key")
            if issue is not None:
                what = ("is signed by another key" if issue == "wrong key"
                        else "has a signature that does not verify")
                bad.append((cp.size, Problem(issue, None, f"{where} (size {cp.size}) {what}")))
            else:
                valid.append((where, cp, is_external))
        if bad:
            return done(min(bad, key=lambda b: b[0])[1], source=source)

        # the chain
        genesis = genesis_head(run_id, pinned)
        first = work.first_bad(conn, stop, genesis)
        exported = [cp for _, cp, ext in valid if ext]
        latest = max((cp.size for cp in exported), default=None)
        if first is not None:
            return done(_classify(conn, first), stop, len(valid), len(exported), latest, source)

        # the chain against the checkpoints
        good_below = 0
        for where, cp, _ext in sorted(valid, key=lambda v: v[1].size):
            if cp.size > stop:
                return done(Problem("truncated", stop,
                                    f"the log ends after {stop} records but {where} commits to "
                                    f"{cp.size}: {cp.size - stop} record(s) are gone"),
                            stop, len(valid), len(exported), latest, source)
            head = genesis if cp.size == 0 else conn.execute(
                "SELECT head FROM records WHERE seq = ?", (cp.size - 1,)).fetchone()[0]
            if head != cp.head:
                return done(Problem("modified", good_below,
                                    f"the log diverges from {where}: records {good_below}.."
                                    f"{cp.size - 1} were rewritten (the chain was recomputed)"),
                            stop, len(valid), len(exported), latest, source)
            good_below = cp.size
        # the columns and indexes readers narrow by
        index = index_check.result()
        if index is not None:
            return done(index, stop, len(valid), len(exported), latest, source)
        if source != "--public-key":
            notes.append(f"the key is pinned by {source}: unless that lives on another "
                         "machine, a host root could re-key the whole trail consistently; "
                         "pin it with --public-key or keep the checkpoint sink off this host")
        anchored = latest if latest is not None else 0
        if stop > anchored:
            tail = _tail(conn, anchored, stop)
            what = ("no exported checkpoint: " if not exported else "") + \
                f"{tail} lie after the latest exported checkpoint"
            if require_anchor:
                return done(Problem("unanchored", anchored,
                                    f"{what}; they are protected by the chain alone, so a "
                                    "host root could truncate or rewrite them unseen"),
                            stop, len(valid), len(exported), latest, source)
            notes.append(f"{what} and are protected by the chain alone")
        return done(None, stop, len(valid), len(exported), latest, source)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read {path}: {exc}") from exc
    finally:
        if work is not None:
            work.close()
        if index_check is not None:
            with contextlib.suppress(Exception):
                index_check.result()
        conn.close()


def verify_state_dir(
    state_dir: str | os.PathLike[str] | None,
    *,
    checkpoints: str | os.PathLike[str] | None = None,
    run: str | None = None,
    public_key: str | None = None,
    workers: int | None = None,
    require_anchor: bool = False,
) -> list[RunVerification]:
    """Verify every run (or one) in a state directory. ``checkpoints`` is a note file,
    a run directory or a sink root (default: ``BASTION_CHECKPOINT_DIR`` or the state
    dir's checkpoint sink)."""
    state = StateDir.resolve(state_dir)
    source = Path(checkpoints) if checkpoints is not None else Path(
        os.environ.get("BASTION_CHECKPOINT_DIR") or state.checkpoints)
    external = read_external(source) if (checkpoints is not None or source.exists()) else {}
    pinned = public_key_from_b64(public_key) if public_key else None
    results: list[RunVerification] = []
    seen: set[str] = set()
    for path in list_run_dbs(state.audit):
        if run is not None and run not in (path.stem, _run_id_of(path)):
            continue
        seen.add(path.stem)
        results.append(verify_run(path, state=state, external=external.get(path.stem),
                                  public_key=pinned, workers=workers,
                                  require_anchor=require_anchor))
    for stem, ext in sorted(external.items()):
        if stem in seen or (run is not None and run != stem) or not ext.notes:
            continue
        results.append(RunVerification(
            stem, str(state.audit / f"{stem}.db"), 0, 0, len(ext.notes), None, "the checkpoint sink",
            0.0, Problem("deleted", 0, "the run's audit database is missing but exported "
                                       "checkpoints for it exist")))
    return results


def _run_id_of(path: Path) -> str | None:
    try:
        conn = connect(path, readonly=True)
    except AuditError:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'run_id'").fetchone()
        return row[0] if row else None
    finally:
        conn.close()

