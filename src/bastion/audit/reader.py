"""Reading the trail back: records, exports, incidents and the records of one episode.

Readers trust only a record's body (the hashed bytes); the ``type`` and
``episode_id`` columns are used to narrow a scan and are re-checked against the body.
Reading does not verify the chain (that is ``verify``'s job, and it is cheap enough
to run first); every reader names the run and position of what it returns, so a
finding can always be checked against a verified log.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TextIO

import orjson

from ..events import Event, Severity, Verdict
from ..state import StateDir
from .errors import AuditError
from .store import connect, list_run_dbs

__all__ = [
    "Incident",
    "Record",
    "RunLog",
    "episode_records",
    "export_jsonl",
    "incidents",
    "open_logs",
]

_EVENT_TYPES = ("event", "lifecycle", "action")


@dataclass(frozen=True)
class Record:
    run_id: str
    seq: int
    type: str  # event, lifecycle, action, verdict, policy (or a bulk type)
    data: dict[str, Any]
    head: bytes

    @property
    def episode_id(self) -> str | None:
        return self.data.get("episode_id")

    @property
    def step(self) -> int | None:
        return self.data.get("step")

    @property
    def call_id(self) -> str | None:
        return self.data.get("call_id")

    @property
    def wall(self) -> float:
        return float(self.data.get("wall") or 0.0)

    @property
    def is_event(self) -> bool:
        return self.type in _EVENT_TYPES

    def event(self) -> Event:
        return Event.from_dict(self.data)

    def verdict(self) -> Verdict:
        return Verdict.from_dict(self.data)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "seq": self.seq, "type": self.type,
                "head": self.head.hex(), "data": self.data}


class RunLog:
    """One run's database, opened read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path, readonly=True)
        try:
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            self._conn.close()
            raise AuditError(f"{path} is not an audit database: {exc}") from exc
        self.run_id: str = meta.get("run_id", path.stem)
        self.public_key: str = meta.get("public_key", "")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, args: tuple[Any, ...]) -> Iterator[Record]:
        try:
            cur = self._conn.execute(sql, args)
            while rows := cur.fetchmany(4096):
                for seq, body, head in rows:
                    record = orjson.loads(body)
                    if record.get("seq") != seq:
                        raise AuditError(f"{self.path}: record {seq} claims position "
                                         f"{record.get('seq')}; run `bastion audit verify`")
                    yield Record(self.run_id, seq, record.get("type", ""),
                                 record.get("data") or {}, head)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read {self.path}: {exc}") from exc

    def records(self, *, types: tuple[str, ...] | None = None, start: int = 0
                ) -> Iterator[Record]:
        if types:
            marks = ",".join("?" * len(types))
            yield from (r for r in self._rows(
                f"SELECT seq, body, head FROM records WHERE seq >= ? AND type IN ({marks}) "
                "ORDER BY seq", (start, *types)) if r.type in types)
        else:
            yield from self._rows("SELECT seq, body, head FROM records WHERE seq >= ? "
                                  "ORDER BY seq", (start,))

    def episode(self, episode_id: str) -> list[Record]:
        span = self._conn.execute("SELECT first_seq, last_seq FROM episodes WHERE episode_id = ?",
                                  (episode_id,)).fetchone()
        if span is None:
            return []
        return [r for r in self._rows(
            "SELECT seq, body, head FROM records WHERE seq BETWEEN ? AND ? AND episode_id = ? "
            "ORDER BY seq", (span[0], span[1], episode_id)) if r.episode_id == episode_id]

    def episodes(self) -> list[str]:
        return [row[0] for row in self._conn.execute(
            "SELECT episode_id FROM episodes ORDER BY first_seq")]

    def policy_text(self, policy_hash: str) -> str | None:
        row = self._conn.execute("SELECT seq FROM policies WHERE hash = ?",
                                 (policy_hash,)).fetchone()
        candidates = (self._rows("SELECT seq, body, head FROM records WHERE seq = ?", (row[0],))
                      if row else self.records(types=("policy",)))
        for record in candidates:
            if record.type == "policy" and record.data.get("hash") == policy_hash:
                return str(record.data.get("text", ""))
        return None


def open_logs(state_dir: str | os.PathLike[str] | None, run: str | None = None) -> list[RunLog]:
    state = StateDir.resolve(state_dir)
    logs = []
    for path in list_run_dbs(state.audit):
        log = RunLog(path)
        if run is None or run in (log.run_id, path.stem):
            logs.append(log)
        else:
            log.close()
    return logs


def export_jsonl(state_dir: str | os.PathLike[str] | None, out: TextIO, *,
                 run: str | None = None) -> int:
    """Write every record as one JSON object per line (run, seq, type, head, data)."""
    count = 0
    for log in open_logs(state_dir, run):
        with log:
            for record in log.records():
                out.write(orjson.dumps(record.to_json()).decode())
                out.write("\n")
                count += 1
    return count


@dataclass(frozen=True)
class Incident:
    run_id: str
    seq: int
    verdict: Verdict


def incidents(state_dir: str | os.PathLike[str] | None, *, run: str | None = None,
              min_severity: Severity = Severity.INFO) -> list[Incident]:
    """Every recorded verdict at or above ``min_severity``, in log order per run."""
    found = []
    for log in open_logs(state_dir, run):
        with log:
            for record in log.records(types=("verdict",)):
                verdict = record.verdict()
                if verdict.severity >= min_severity:
                    found.append(Incident(log.run_id, record.seq, verdict))
    return found


def episode_records(state_dir: str | os.PathLike[str] | None, episode_id: str
                    ) -> tuple[list[Record], dict[str, str]]:
    """All records of an episode (across runs, in log order) and the texts of the
    policies stored in those runs, keyed by hash."""
    records: list[Record] = []
    policies: dict[str, str] = {}
    for log in open_logs(state_dir):
        with log:
            found = log.episode(episode_id)
            if not found:
                continue
            records.extend(found)
            hashes = {r.data.get("fields", {}).get("policy_hash") for r in found
                      if r.type == "lifecycle"}
            for digest in filter(None, hashes):
                text = log.policy_text(digest)
                if text is not None:
                    policies[digest] = text
    if not records:
        raise AuditError(f"no records for episode {episode_id!r} in the audit trail")
    return records, policies
