"""The trail's edges: columns readers narrow by, the unanchored tail after a crash,
and a full re-key. Each test is the attack, then what verify and the readers say."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.audit import AuditTrail, Checkpoint, TrailConfig
from bastion.audit.chain import genesis_head
from bastion.audit.reader import incidents
from bastion.events import Event, EventKind
from tests.conftest import wait_for

from .helpers import RUN, build_log, db
from .test_tamper import _one, _other_key, _rechain


@pytest.fixture
def log(audit_state: Path) -> Path:
    build_log(audit_state)
    return audit_state


def test_verdict_retyped_as_event_is_caught(log: Path) -> None:
    before = incidents(log)
    assert before
    conn = db(log)
    seq = conn.execute("SELECT seq FROM records WHERE type = 'verdict' ORDER BY seq LIMIT 1"
                       ).fetchone()[0]
    conn.execute("UPDATE records SET type = 'event' WHERE seq = ?", (seq,))
    # the reader narrowed by the column and lost the verdict...
    assert len(incidents(log)) == len(before) - 1
    # ...so verify must not call the log OK
    result = _one(log)
    assert result.problem is not None and result.problem.kind == "modified"
    assert result.problem.seq == seq and "type column" in result.problem.detail


def test_episode_column_and_index_are_checked(log: Path) -> None:
    conn = db(log)
    seq = conn.execute("SELECT seq FROM records WHERE episode_id = 'ep-1' ORDER BY seq "
                       "LIMIT 1 OFFSET 3").fetchone()[0]
    conn.execute("UPDATE records SET episode_id = 'ep-0' WHERE seq = ?", (seq,))
    problem = _one(log).problem
    assert problem is not None and problem.seq == seq and "episode_id column" in problem.detail
    conn.execute("UPDATE records SET episode_id = 'ep-1' WHERE seq = ?", (seq,))
    assert _one(log).ok
    conn.execute("UPDATE episodes SET first_seq = first_seq + 2 WHERE episode_id = 'ep-1'")
    problem = _one(log).problem
    assert problem is not None and "episode index" in problem.detail


def test_policy_index_is_checked(log: Path) -> None:
    conn = db(log)
    conn.execute("UPDATE policies SET seq = seq + 1")
    problem = _one(log).problem
    assert problem is not None and "policy index" in problem.detail


_WRITER = """
import sys, time
from bastion.audit import AuditTrail, TrailConfig
from bastion.events import Event, EventKind
trail = AuditTrail(sys.argv[1], "crash", config=TrailConfig(checkpoint_every=10**9))
i = 0
while True:
    trail.append_event(Event(kind=EventKind.LIFECYCLE, session_id="s", run_id="crash",
                             episode_id="e", fields={"life.state": f"n{i}"}))
    i += 1
    if i == 50:
        print("ready", flush=True)
    time.sleep(0.002)
"""


def _exported_so_far(state: Path) -> int:
    """Exported checkpoints of the one run in ``state`` while its writer still runs (0
    when a read races the writer: the caller polls)."""
    try:
        return _one(state).exported
    except Exception:  # noqa: BLE001 - a read racing a live writer; polled again
        return 0


def test_sigkill_leaves_at_most_about_a_second_unanchored(audit_state: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(audit_state)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        # several checkpoint intervals while appending: at least 3 s, and at least three
        # exported checkpoints however slowly a loaded machine runs the writer
        started = time.monotonic()
        assert wait_for(lambda: time.monotonic() - started >= 3.0
                        and _exported_so_far(audit_state) >= 3, timeout=90, step=0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = _one(audit_state)
    assert result.ok, result.problem
    assert result.exported >= 3  # exported every ~second, not only checkpoint 0
    tail = [n for n in result.notes if "after the latest exported checkpoint" in n]
    assert len(tail) == 1
    # exact: the positions and how much time they cover
    start, stop = result.latest_exported, result.records
    assert f"seq {start}..{stop - 1}" in tail[0]
    span = float(tail[0].split(", ")[1].split(" s ")[0])
    # about one 1 s interval (with room for a loaded machine's late timer), not the
    # whole run of three seconds and more
    assert span <= 2.0
    # and --require-anchor refuses the unanchored tail
    strict = _one(audit_state, require_anchor=True)
    assert strict.problem is not None and strict.problem.kind == "unanchored"
    assert strict.problem.seq == start


def test_require_anchor_passes_once_the_tail_is_exported(audit_state: Path) -> None:
    with AuditTrail(audit_state, "quiet") as trail:
        trail.append_event(Event(kind=EventKind.LIFECYCLE, session_id="s", run_id="quiet",
                                 episode_id="e", fields={"life.state": "x"}))
        # the writer anchors what arrived within its interval, with nothing more coming
        result = wait_for(lambda: _one(audit_state, require_anchor=True).ok, timeout=30)
        assert result, _one(audit_state, require_anchor=True).problem


def test_cli_require_anchor(audit_state: Path) -> None:
    with AuditTrail(audit_state, "cli-anchor", config=TrailConfig(checkpoint_interval=3600)
                    ) as trail:
        for i in range(3):
            trail.append_event(Event(kind=EventKind.LIFECYCLE, session_id="s",
                                     run_id="cli-anchor", episode_id="e",
                                     fields={"life.state": f"n{i}"}))
        env = {**os.environ, "BASTION_STATE_DIR": str(audit_state)}
        loose = subprocess.run([sys.executable, "-m", "bastion", "audit", "verify"],
                               check=False, capture_output=True, text=True, env=env,
                               timeout=60)
        strict = subprocess.run([sys.executable, "-m", "bastion", "audit", "verify",
                                 "--require-anchor"], check=False, capture_output=True, text=True,
                                env=env, timeout=60)
    assert loose.returncode == 0 and "seq 0..2" in loose.stdout, loose.stdout
    assert strict.returncode == 1 and "unanchored" in strict.stdout


def _rekey_everything_on_host(state: Path) -> None:
    """A host root's full re-key: new key file, metadata, chain, every checkpoint in
    the database and in the local sink, and the sink's pinned key."""
    conn = db(state)
    mallory = _other_key()
    conn.execute("UPDATE meta SET value = ? WHERE key = 'public_key'",
                 (base64.b64encode(mallory.public).decode(),))
    _rechain(conn, 0, genesis_head(RUN, mallory.public))
    conn.execute("DELETE FROM checkpoints")
    head = conn.execute("SELECT head FROM records ORDER BY seq DESC LIMIT 1").fetchone()[0]
    size = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    cp = Checkpoint.sign(f"bastion.audit/{RUN}", size, head, mallory)
    conn.execute("INSERT INTO checkpoints VALUES (?, ?, ?)", (size, head, cp.note()))
    sink = state / "checkpoints" / RUN
    for path in sink.iterdir():
        path.unlink()
    (sink / f"{size:012d}.cp").write_text(cp.note())
    import json

    (sink / "run.json").write_text(json.dumps({"run_id": RUN,
                                               "public_key": mallory.public_b64}))
    (state / "keys" / f"{RUN}.ed25519").unlink(missing_ok=True)


def test_full_rekey_is_caught_by_a_key_pinned_outside_the_host(log: Path, tmp_path: Path
                                                               ) -> None:
    # what an off-host sink holds (here: a copy made before the attack)
    offhost = tmp_path / "offhost-sink"
    shutil.copytree(log / "checkpoints", offhost)
    pinned = (log / "checkpoints" / RUN / "run.json").read_text()
    _rekey_everything_on_host(log)
    # against the host's own files the re-key is consistent: verify can only say how
    # little that proves
    local = _one(log)
    assert local.ok
    assert any("re-key the whole trail" in n for n in local.notes), local.notes
    # against the off-host sink, or a configured public key, it is caught
    result = _one(log, checkpoints=offhost)
    assert result.problem is not None and result.problem.kind == "wrong key"
    import json

    key = json.loads(pinned)["public_key"]
    result = _one(log, public_key=key)
    assert result.problem is not None and result.problem.kind == "wrong key"
