"""The SQLite side: one database per run under ``<state_dir>/audit/``.

One file per run keeps each hash chain in its own file (verification and export are
per-run scans of an INTEGER PRIMARY KEY, the fastest access path SQLite has) and lets
runs be archived or deleted as units. WAL mode with ``synchronous=FULL`` makes every
commit durable when ``COMMIT`` returns (with ``NORMAL`` a commit may roll back after a
power loss); the writer batches many records into one transaction (group commit).

Tables:
  meta(key, value)                      run id, origin, public key, format
  records(seq, type, episode_id, body, head)
                                        body = the hashed canonical bytes, head = chain
                                        head after this record; type/episode_id are
                                        copies for filtering only (readers trust body)
  checkpoints(size, head, note)         signed notes (also exported to the sink)
  episodes(episode_id, first_seq, last_seq, records)
  policies(hash, seq)                   which record holds each policy text
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from pathlib import Path

from .errors import AuditError

__all__ = ["SCHEMA", "connect", "db_path", "list_run_dbs", "run_stem"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    episode_id TEXT,
    body BLOB NOT NULL,
    head BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY, head BLOB NOT NULL, note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS episodes (
    episode_id TEXT PRIMARY KEY, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    records INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (hash TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
"""

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")


def run_stem(run_id: str) -> str:
    """A file-system-safe name for a run: the id itself when it is tame, otherwise a
    readable prefix plus a hash (so distinct ids never share a file)."""
    if _SAFE.match(run_id):
        return run_id
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:40].lstrip("._-") or "run"
    return f"{readable}-{digest}"


def db_path(audit_dir: Path, run_id: str) -> Path:
    return audit_dir / f"{run_stem(run_id)}.db"


def list_run_dbs(audit_dir: Path) -> list[Path]:
    try:
        return sorted(audit_dir.glob("*.db"))
    except OSError as exc:
        raise AuditError(f"cannot list {audit_dir}: {exc}") from exc


def connect(path: Path, *, readonly: bool = False, busy_timeout_ms: int = 5000
            ) -> sqlite3.Connection:
    """Open a run database with the durability settings (WAL, synchronous=FULL)."""
    try:
        if readonly:
            if not path.exists():
                raise AuditError(f"no audit database at {path}")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # root-only from birth
            os.close(fd)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if not readonly:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AuditError(f"{path}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
        return conn
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open audit database {path}: {exc}") from exc
