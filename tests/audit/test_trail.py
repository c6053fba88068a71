"""The writer: group commit, positions, several writers on one run, checkpoints on
schedule and at episode end, keys and permissions, and failing closed."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bastion import Event, EventKind, Policy
from bastion.audit import (
    AuditError,
    AuditTrail,
    Checkpoint,
    TrailConfig,
    open_trail,
    verify_state_dir,
)


def _ev(n: int, **fields: object) -> Event:
    return Event(EventKind.EXEC, run_id="r", episode_id="e", step=n, call_id=f"c{n}", pid=n,
                 fields={"proc.name": "p", **fields})


def _notes(state: Path, run: str = "r") -> list[Checkpoint]:
    return sorted((Checkpoint.parse(p.read_text())
                   for p in (state / "checkpoints" / run).glob("*.cp")), key=lambda c: c.size)


def test_many_producers_share_commits(audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r")
    seqs: list[int] = []
    lock = threading.Lock()

    def produce(k: int) -> None:
        for n in range(100):
            seq = trail.append_event(_ev(k * 1000 + n))
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = trail.statistics()
    trail.close()
    assert sorted(seqs) == list(range(800))
    assert stats.records == 800
    assert stats.batches < 800  # producers shared fsyncs (group commit)
    assert verify_state_dir(audit_state)[0].ok


def test_bulk_submit_is_consecutive(audit_state: Path) -> None:
    with AuditTrail(audit_state, "r") as trail:
        trail.append_event(_ev(0))
        ticket = trail.submit_events([_ev(n) for n in range(1, 501)])
        assert ticket.count == 500
        assert ticket.wait() == 1
        assert trail.flush() == 501


def test_two_writers_one_chain(audit_state: Path) -> None:
    """Two trail objects (as two processes would) interleave on one run's log."""
    a = AuditTrail(audit_state, "r")
    b = AuditTrail(audit_state, "r")
    got = []
    for n in range(50):
        got.append(a.append_event(_ev(n)))
        got.append(b.append_event(_ev(n)))
    a.close()
    b.close()
    assert sorted(got) == list(range(100))
    result = verify_state_dir(audit_state)[0]
    assert result.ok and result.records == 100, result.problem


def test_two_trails_of_one_run_export_the_same_checkpoint_at_once(audit_state: Path) -> None:
    """Two trail objects of one run in one process checkpoint the same size together:
    neither renames the other's temporary export away (that failed a trail, closed)."""
    a = AuditTrail(audit_state, "r")
    b = AuditTrail(audit_state, "r")
    a.append_event(_ev(0))
    b.append_event(_ev(1))
    together = threading.Barrier(2)
    errors: list[BaseException] = []

    def export(trail: AuditTrail) -> None:
        try:
            for _ in range(100):
                together.wait(timeout=60)
                trail.checkpoint()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            together.abort()

    threads = [threading.Thread(target=export, args=(t,)) for t in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and a.failed is None and b.failed is None, errors[:1]
    a.close()
    b.close()
    assert verify_state_dir(audit_state)[0].ok


def test_reopen_continues_the_chain(audit_state: Path) -> None:
    with AuditTrail(audit_state, "r") as trail:
        assert trail.append_event(_ev(0)) == 0
    with AuditTrail(audit_state, "r") as trail:
        assert trail.append_event(_ev(1)) == 1
    assert verify_state_dir(audit_state)[0].ok


def test_policy_stored_once_per_hash(audit_state: Path) -> None:
    default = Policy.default()
    other = Policy.from_dict({"name": "other"})
    with AuditTrail(audit_state, "r") as trail:
        assert trail.append_policy(default) == 0
        assert trail.append_policy(default) is None
        assert trail.append_policy(other) == 1
    with AuditTrail(audit_state, "r") as trail:  # remembered across opens
        assert trail.append_policy(default) is None
    conn = sqlite3.connect(audit_state / "audit" / "r.db")
    stored = conn.execute("SELECT hash FROM policies ORDER BY seq").fetchall()
    assert [h for (h,) in stored] == [default.hash, other.hash]
    text = conn.execute("SELECT body FROM records WHERE seq = 0").fetchone()[0]
    assert Policy.from_yaml(__import__("orjson").loads(text)["data"]["text"]).hash == default.hash


def test_checkpoint_at_episode_end_before_ack(audit_state: Path) -> None:
    with AuditTrail(audit_state, "r", config=TrailConfig(checkpoint_every=10**9,
                                                          checkpoint_interval=3600)) as trail:
        for n in range(5):
            trail.append_event(_ev(n))
        assert [c.size for c in _notes(audit_state)] == [0]  # only the genesis checkpoint
        end = Event(EventKind.LIFECYCLE, run_id="r", episode_id="e",
                    fields={"life.state": "closing"})
        seq = trail.append_event(end)
        assert _notes(audit_state)[-1].size == seq + 1  # exported when append returned


def test_checkpoints_every_n_and_every_t(audit_state: Path) -> None:
    config = TrailConfig(checkpoint_every=10, checkpoint_interval=3600)
    with AuditTrail(audit_state, "r", config=config) as trail:
        for n in range(35):
            trail.append_event(_ev(n))
        assert [c.size for c in _notes(audit_state)] == [0, 10, 20, 30]
    assert _notes(audit_state)[-1].size == 35  # and on close
    config = TrailConfig(checkpoint_every=10**9, checkpoint_interval=0.05)
    with AuditTrail(audit_state, "t", config=config) as trail:
        trail.append_event(_ev(0))
        deadline = time.monotonic() + 5
        while _notes(audit_state, "t")[-1].size < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _notes(audit_state, "t")[-1].size == 1  # the timer fired, not close()


def test_key_and_files_are_root_only(audit_state: Path) -> None:
    with AuditTrail(audit_state, "r") as trail:
        trail.append_event(_ev(0))
        key_path = trail.key.path
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((audit_state / "audit" / "r.db").stat().st_mode) == 0o600
    for private in ("audit", "keys", "checkpoints"):
        assert stat.S_IMODE((audit_state / private).stat().st_mode) == 0o700
    conn = sqlite3.connect(audit_state / "audit" / "r.db")
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["public_key"] == trail.key.public_b64  # the run's metadata names its key
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE records SET type = 'x' WHERE seq = 0")


def test_database_locked_fails_closed(audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r", config=TrailConfig(busy_timeout_ms=100))
    trail.append_event(_ev(0))
    blocker = sqlite3.connect(audit_state / "audit" / "r.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(AuditError, match="locked"):
            trail.append_event(_ev(1))
        with pytest.raises(AuditError, match="refuses appends"):
            trail.append_event(_ev(2))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        trail.close()
    result = verify_state_dir(audit_state)[0]
    assert result.ok and result.records == 1


def test_unencodable_record_is_refused(audit_state: Path) -> None:
    with AuditTrail(audit_state, "r") as trail:
        with pytest.raises(AuditError, match="cannot encode"):
            trail.append_event(_ev(0, huge=2**70))
        assert trail.append_event(_ev(1)) == 0  # nothing was half-written


def test_open_trail_is_one_per_run(audit_state: Path) -> None:
    a = open_trail(audit_state, "r")
    assert open_trail(audit_state, "r") is a
    assert open_trail(audit_state, "other") is not a
    a.close()
    assert open_trail(audit_state, "r") is not a
    open_trail(audit_state, "r").close()
    open_trail(audit_state, "other").close()


def test_another_key_cannot_extend_a_run(audit_state: Path) -> None:
    with AuditTrail(audit_state, "r") as trail:
        trail.append_event(_ev(0))
        key_path = trail.key.path
    key_path.unlink()  # a new key would be generated...
    with pytest.raises(AuditError, match="another key"):
        AuditTrail(audit_state, "r")  # ...and is refused: the run is bound to its key


def test_queued_appends_fail_closed_on_the_next_append(audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r", config=TrailConfig(durable_appends=False,
                                                             busy_timeout_ms=100))
    assert trail.append_event(_ev(0)) is None
    assert trail.flush() == 1  # acknowledged here
    blocker = sqlite3.connect(audit_state / "audit" / "r.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        trail.append_event(_ev(1))  # queued; its commit will fail
        with pytest.raises(AuditError, match="locked"):
            trail.flush()
        with pytest.raises(AuditError):
            trail.append_event(_ev(2))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        trail.close()


def test_process_exit_flushes_and_checkpoints(audit_state: Path) -> None:
    """A process that never closes its trail (a CLI run, a crashed trainer script that
    still exits normally) leaves a final exported checkpoint behind."""
    code = (
        "import sys\n"
        "from bastion import Event, EventKind\n"
        "from bastion.audit import TrailConfig, open_trail\n"
        "t = open_trail(sys.argv[1], 'r', config=TrailConfig(durable_appends=False,\n"
        "               checkpoint_every=10**9, checkpoint_interval=3600))\n"
        "for n in range(7):\n"
        "    t.append_event(Event(EventKind.EXEC, run_id='r', pid=n))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(audit_state)], check=True, timeout=60)
    assert _notes(audit_state)[-1].size == 7
    result = verify_state_dir(audit_state)[0]
    assert result.ok and result.records == 7 and result.latest_exported == 7


def test_open_trail_replaces_a_failed_trail(audit_state: Path) -> None:
    trail = open_trail(audit_state, "r", config=TrailConfig(busy_timeout_ms=50))
    trail.append_event(_ev(0))
    blocker = sqlite3.connect(audit_state / "audit" / "r.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(AuditError):
        trail.append_event(_ev(1))
    blocker.execute("ROLLBACK")
    blocker.close()
    fresh = open_trail(audit_state, "r")
    assert fresh is not trail and trail.failed is not None
    assert fresh.append_event(_ev(2)) == 1  # the chain resumes after the last durable record
    fresh.close()
    assert verify_state_dir(audit_state)[0].ok
