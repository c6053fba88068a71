"""SIGKILL the writer mid-stream, many times: every acknowledged record survives and
the log still verifies (including against the checkpoints exported before the kill)."""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bastion.audit import verify_state_dir

pytestmark = pytest.mark.slow  # 20 writer processes, killed mid-stream

WRITER = Path(__file__).with_name("writer_proc.py")
ROUNDS = 20


def _run_and_kill(state: Path, run: str, rng: random.Random) -> dict[int, str]:
    proc = subprocess.Popen([sys.executable, str(WRITER), str(state), run],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).parents[2])
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    acked: dict[int, str] = {}
    deadline = None
    try:
        while True:
            now = time.monotonic()
            # kill at a random point mid-stream, but only once something was
            # acknowledged: on a loaded machine the first ack can come late
            if deadline is not None and now >= deadline and acked:
                break
            ready, _, _ = select.select([fd], [], [], 0.05 if deadline else 10)
            if not ready:
                if deadline is None and proc.poll() is not None:
                    raise AssertionError(f"writer died: {proc.stderr.read().decode()}")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line == b"ready":
                    deadline = time.monotonic() + rng.uniform(0.03, 0.15)
                elif line:
                    seq, event_id = line.decode().split()
                    acked[int(seq)] = event_id
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # lines the writer printed before dying: complete ones were acknowledged
    rest = buf + proc.stdout.read()
    for line in rest.split(b"\n")[:-1]:
        if line and line != b"ready":
            seq, event_id = line.decode().split()
            acked[int(seq)] = event_id
    proc.stdout.close()
    proc.stderr.close()
    return acked


def test_sigkill_loses_no_acknowledged_record(audit_state: Path) -> None:
    rng = random.Random(6)
    run = "crash-run"
    all_acked: dict[int, str] = {}
    for round_no in range(ROUNDS):
        acked = _run_and_kill(audit_state, run, rng)
        assert acked, f"round {round_no}: the writer acknowledged nothing"
        assert not set(acked) & set(all_acked), "a position was handed out twice"
        all_acked.update(acked)
        conn = sqlite3.connect(f"file:{audit_state}/audit/{run}.db?mode=ro", uri=True)
        try:
            stored = dict(conn.execute("SELECT seq, body FROM records"))
        finally:
            conn.close()
        missing = [s for s in all_acked if s not in stored]
        assert not missing, f"round {round_no}: acknowledged records lost: {missing[:5]}"
        wrong = [s for s, eid in all_acked.items() if f'"id":"{eid}"'.encode() not in stored[s]]
        assert not wrong, f"round {round_no}: records changed position: {wrong[:5]}"
        result = verify_state_dir(audit_state)[0]
        assert result.ok, f"round {round_no}: {result.problem}"
        assert result.exported > 0 and result.latest_exported is not None
    assert len(all_acked) > ROUNDS * 10
