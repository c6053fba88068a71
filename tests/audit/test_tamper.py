"""One test per kind of tampering: each must be caught by verify with the right name."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

import bastion.audit.verify as verify_mod
from bastion.audit import Checkpoint, verify_state_dir
from bastion.audit.chain import claimed_seq, encode_body, genesis_head
from bastion.audit.keys import RunKey
from bastion.cli import app

from .helpers import RUN, build_log, db


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _chain(prev: bytes, body: bytes) -> bytes:
    return _sha(b"\x01" + prev + _sha(b"\x00" + body))


def _one(state: Path, **kwargs: object):
    results = verify_state_dir(state, **kwargs)  # type: ignore[arg-type]
    assert len(results) == 1
    return results[0]


def _rows(conn, start: int = 0) -> list[tuple[int, str, str, bytes, bytes]]:
    return conn.execute("SELECT seq, type, episode_id, body, head FROM records WHERE seq >= ? "
                        "ORDER BY seq", (start,)).fetchall()


def _rechain(conn, start: int, genesis: bytes | None = None) -> None:
    """What an attacker who knows the scheme (but not the key) does after an edit:
    recompute every head from ``start`` on so the chain is internally consistent."""
    if start == 0:
        prev = genesis
    else:
        prev = conn.execute("SELECT head FROM records WHERE seq = ?", (start - 1,)).fetchone()[0]
    for seq, _t, _e, body, _h in _rows(conn, start):
        prev = _chain(prev, body)
        conn.execute("UPDATE records SET head = ? WHERE seq = ?", (prev, seq))


def _shift(conn, start: int, delta: int) -> None:
    rows = _rows(conn, start)
    conn.execute("DELETE FROM records WHERE seq >= ?", (start,))
    conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                     [(s + delta, t, e, b, h) for s, t, e, b, h in rows])


@pytest.fixture
def log(audit_state: Path) -> Path:
    acked = build_log(audit_state)
    assert acked == list(range(len(acked)))
    return audit_state


def test_clean_log_verifies(log: Path) -> None:
    result = _one(log)
    assert result.ok, result.problem
    assert result.records == 93
    assert result.latest_exported == 93  # the episode-end checkpoint was exported
    assert result.key_source == "the checkpoint sink"


def test_modified_record(log: Path) -> None:
    conn = db(log)
    body = conn.execute("SELECT body FROM records WHERE seq = 40").fetchone()[0]
    forged = body.replace(b"203.0.113.5", b"198.51.100.9")
    assert forged != body
    conn.execute("UPDATE records SET body = ? WHERE seq = 40", (forged,))
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("modified", 40)


def test_modified_as_text_column(log: Path) -> None:
    conn = db(log)  # SQL-level edit: replace() turns the BLOB into TEXT
    conn.execute("UPDATE records SET body = replace(body, 'ls -la', 'ls -lh') WHERE seq = 3")
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("modified", 3)


def test_modified_and_rechained_is_caught_by_checkpoints(log: Path) -> None:
    conn = db(log)
    body = conn.execute("SELECT body FROM records WHERE seq = 40").fetchone()[0]
    conn.execute("UPDATE records SET body = ? WHERE seq = 40",
                 (body.replace(b"deny", b"allo"),))
    _rechain(conn, 40)
    problem = _one(log).problem
    assert problem is not None and problem.kind == "modified"
    assert problem.seq is not None and problem.seq <= 40
    assert "rewritten" in problem.detail


def test_deleted_record_gap(log: Path) -> None:
    db(log).execute("DELETE FROM records WHERE seq = 40")
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("deleted", 40)


def test_deleted_record_renumbered(log: Path) -> None:
    conn = db(log)
    conn.execute("DELETE FROM records WHERE seq = 40")
    _shift(conn, 41, -1)
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("deleted", 40)


def test_deleted_first_record(log: Path) -> None:
    db(log).execute("DELETE FROM records WHERE seq = 0")
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("deleted", 0)


@pytest.mark.parametrize("consistent", [True, False])
def test_inserted_record(log: Path, consistent: bool) -> None:
    conn = db(log)
    template = conn.execute("SELECT type, episode_id, body FROM records WHERE seq = 40"
                            ).fetchone()
    _shift(conn, 40, +1)
    body = encode_body(40, b'{"data":{"episode_id":"ep-0","kind":"exec","fields":'
                           b'{"proc.name":"innocent"}},"type":"event"}')
    prev = conn.execute("SELECT head FROM records WHERE seq = 39").fetchone()[0]
    head = _chain(prev, body) if consistent else b"\x00" * 32
    conn.execute("INSERT INTO records VALUES (40, ?, ?, ?, ?)",
                 (template[0], template[1], body, head))
    assert claimed_seq(conn.execute("SELECT body FROM records WHERE seq = 41").fetchone()[0]) == 40
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("inserted", 40)


def test_reordered_records(log: Path) -> None:
    conn = db(log)
    a = conn.execute("SELECT body, head FROM records WHERE seq = 40").fetchone()
    b = conn.execute("SELECT body, head FROM records WHERE seq = 41").fetchone()
    conn.execute("UPDATE records SET body = ?, head = ? WHERE seq = 40", b)
    conn.execute("UPDATE records SET body = ?, head = ? WHERE seq = 41", a)
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("reordered", 40)


def test_truncated_against_exported_checkpoint(log: Path) -> None:
    conn = db(log)
    conn.execute("DELETE FROM records WHERE seq >= 80")
    conn.execute("DELETE FROM checkpoints WHERE size > 80")  # cover the tracks locally
    problem = _one(log).problem
    assert problem is not None and (problem.kind, problem.seq) == ("truncated", 80)
    assert "exported checkpoint" in problem.detail


def test_truncated_against_one_checkpoint_file(log: Path, tmp_path: Path) -> None:
    latest = max((log / "checkpoints" / RUN).glob("*.cp"))
    copy = tmp_path / "latest.cp"
    copy.write_bytes(latest.read_bytes())  # what a trainer driver kept
    conn = db(log)
    conn.execute("DELETE FROM records WHERE seq >= 90")
    conn.execute("DELETE FROM checkpoints WHERE size > 90")
    for note in (log / "checkpoints" / RUN).glob("*.cp"):
        note.unlink()  # the local sink is gone too
    problem = _one(log, checkpoints=copy).problem
    assert problem is not None and (problem.kind, problem.seq) == ("truncated", 90)


def test_forged_signature_in_database(log: Path) -> None:
    conn = db(log)
    size, note = conn.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
                              ).fetchone()
    cp = Checkpoint.parse(note)
    bad = Checkpoint(cp.origin, cp.size, cp.head, cp.time_ms, cp.key_name, cp.key_hash,
                     bytes([cp.signature[0] ^ 1]) + cp.signature[1:])
    conn.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (bad.note(), size))
    problem = _one(log).problem
    assert problem is not None and problem.kind == "forged signature"
    assert f"checkpoint {size} in the database" in problem.detail


def test_forged_exported_checkpoint(log: Path) -> None:
    note = max((log / "checkpoints" / RUN).glob("*.cp"))
    text = note.read_text()
    lines = text.split("\n")
    lines[1] = str(int(lines[1]) + 7)  # claim a longer log than was signed
    note.write_text("\n".join(lines))
    problem = _one(log).problem
    assert problem is not None and problem.kind == "forged signature"


def _other_key() -> RunKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
    return RunKey(private, public, Path("/nonexistent"))


def test_wrong_key_resigned_checkpoints(log: Path) -> None:
    conn = db(log)
    mallory = _other_key()
    for size, note in conn.execute("SELECT size, note FROM checkpoints").fetchall():
        cp = Checkpoint.parse(note)
        conn.execute("UPDATE checkpoints SET note = ? WHERE size = ?",
                     (Checkpoint.sign(cp.origin, cp.size, cp.head, mallory).note(), size))
    problem = _one(log).problem
    assert problem is not None and problem.kind == "wrong key"


@pytest.mark.parametrize("pin", ["sink", "key file"])
def test_wrong_key_full_rewrite(log: Path, pin: str) -> None:
    """The attacker rewrites everything under a key of their own: new public key in
    the metadata, new genesis, every head, every checkpoint. Only a key pinned outside
    the database exposes it."""
    conn = db(log)
    mallory = _other_key()
    conn.execute("UPDATE meta SET value = ? WHERE key = 'public_key'",
                 (base64.b64encode(mallory.public).decode(),))
    _rechain(conn, 0, genesis_head(RUN, mallory.public))
    conn.execute("DELETE FROM checkpoints")
    head = conn.execute("SELECT head FROM records ORDER BY seq DESC LIMIT 1").fetchone()[0]
    size = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    cp = Checkpoint.sign(f"bastion.audit/{RUN}", size, head, mallory)
    conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (size, head, cp.note()))
    if pin == "key file":
        for path in (log / "checkpoints" / RUN).iterdir():
            path.unlink()
    result = _one(log)
    assert result.problem is not None and result.problem.kind == "wrong key"
    assert ("checkpoint sink" if pin == "sink" else "key file") in result.problem.detail


def test_missing_database_with_exported_checkpoints(log: Path) -> None:
    (log / "audit" / f"{RUN}.db").unlink()
    for suffix in ("-wal", "-shm"):
        (log / "audit" / f"{RUN}.db{suffix}").unlink(missing_ok=True)
    problem = _one(log).problem
    assert problem is not None and problem.kind == "deleted"


def test_parallel_scan_finds_the_same_record(audit_state: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_mod, "_PARALLEL_MIN", 0)  # split even a small log
    build_log(audit_state, episodes=40, checkpoint_every=500)  # ~1800 records
    assert _one(audit_state, workers=3).ok
    db(audit_state).execute("DELETE FROM records WHERE seq = 1234")
    for workers in (1, 3):
        problem = _one(audit_state, workers=workers).problem
        assert problem is not None and (problem.kind, problem.seq) == ("deleted", 1234)


def test_cli_verify_reports_kind_and_exit_code(log: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--state-dir", str(log)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "93 records" in ok.output
    db(log).execute("DELETE FROM records WHERE seq = 12")
    bad = runner.invoke(app, ["audit", "verify", "--state-dir", str(log), "--json"])
    assert bad.exit_code == 1
    assert '"kind": "deleted"' in bad.output and '"seq": 12' in bad.output


def test_damaged_file_is_corrupt(log: Path) -> None:
    path = log / "audit" / f"{RUN}.db"
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page:3 * page + 64] = b"\xff" * 64  # a b-tree page header, not a record
    path.write_bytes(bytes(data))
    problem = _one(log).problem
    assert problem is not None and problem.kind == "corrupt"
