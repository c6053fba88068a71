"""Disk full: the append that cannot be made durable raises, the trail refuses further
appends, the session stops executing with a clear reason, and nothing acknowledged
is lost."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion import Event, EventKind, Policy, Session, SessionBroken, Verdict
from bastion.audit import AuditError, AuditTrail, verify_state_dir
from bastion.errors import BastionError


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 2 MiB tmpfs under /var/tmp (sandbox uids can traverse /var/tmp)."""
    mnt = Path(tempfile.mkdtemp(prefix="bastion-full-", dir="/var/tmp"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0711", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(mnt, ignore_errors=True)
        pytest.fail(f"cannot mount a tmpfs (tests run as root): {done.stderr}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)


def _fill(fs: Path) -> Path:
    """Fill ``fs``; it may be full already (the session's own state filled 2 MiB on a
    fast machine before the test got here: then not even the filler can be created)."""
    filler = fs / "filler"
    chunk = b"\0" * 65536
    try:
        out = open(filler, "wb")  # noqa: SIM115 - closed below, after the fill
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        return filler
    with out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _event(n: int, episode: str = "ep") -> Event:
    return Event(EventKind.EXEC, run_id="full", episode_id=episode, step=n, call_id=f"c{n}",
                 pid=100 + n, fields={"proc.name": "x", "proc.cmdline": "y" * 200})


def test_append_raises_on_full_disk_and_keeps_acknowledged(small_fs: Path) -> None:
    trail = AuditTrail(small_fs / "state", "full")
    acked = {trail.append_event(_event(n)) for n in range(20)}
    filler = _fill(small_fs)
    with pytest.raises(AuditError) as failure:
        for n in range(20, 100_000):
            acked.add(trail.append_event(_event(n)))
    assert "full" in str(failure.value) or "space" in str(failure.value).lower()
    with pytest.raises(AuditError, match="refuses appends"):
        trail.append_event(_event(0))  # fail closed: no later record slips in
    trail.close()
    filler.unlink(missing_ok=True)
    results = verify_state_dir(small_fs / "state")
    assert results[0].ok, results[0].problem
    assert results[0].records >= len(acked)
    assert max(acked) < results[0].records  # every acknowledged position is in the log
    with AuditTrail(small_fs / "state", "full") as again:  # space is back: it resumes
        assert again.append_event(_event(1)) == results[0].records


class _Acknowledged:
    """The session's recorder: the trail itself, keeping the position each append
    returned (what the session was told is durable)."""

    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail
        self.acked: dict[int, str] = {}

    def append_event(self, event: Event) -> None:
        seq = self.trail.append_event(event)
        assert seq is not None
        self.acked[seq] = event.id

    def append_verdict(self, verdict: Verdict) -> None:
        seq = self.trail.append_verdict(verdict)
        assert seq is not None
        self.acked[seq] = verdict.id

    def append_policy(self, policy: object, *, episode_id: str) -> None:
        self.trail.append_policy(policy, episode_id=episode_id)

    def flush(self, *, checkpoint: bool = False) -> None:
        self.trail.flush(checkpoint=checkpoint)


def test_session_stops_when_its_audit_fails(small_fs: Path) -> None:
    workspace = Path(tempfile.mkdtemp(prefix="bastion-ws-", dir="/var/tmp"))
    try:
        state = small_fs / "state"
        trail = AuditTrail(state, "full")
        recorder = _Acknowledged(trail)
        policy = Policy.from_dict({"sandbox": {"workspace": str(workspace)}})
        trail.append_policy(policy)
        with Session(policy, run_id="full", episode_id="ep-s", state_dir=state,
                     recorder=recorder) as session:
            first = session.exec("echo ran > /workspace/marker-0", step=0)
            assert first.ok and (workspace / "marker-0").exists()
            filler = _fill(small_fs)
            stopped_at = None
            for step in range(1, 500):
                try:
                    session.exec(f"echo ran > /workspace/marker-{step}", step=step)
                except BastionError as exc:
                    assert isinstance(exc, AuditError), exc
                    stopped_at = step
                    break
            assert stopped_at is not None, "the session kept running with a full audit disk"
            assert session.ended is not None and "AuditError" in session.ended
            assert "disk is full" in session.ended
            # the call whose audit record could not be written never ran
            assert not (workspace / f"marker-{stopped_at}").exists()
            with pytest.raises(SessionBroken, match="audit"):
                session.exec("echo again > /workspace/after", step=stopped_at + 1)
            assert not (workspace / "after").exists()
        trail.close()
        filler.unlink(missing_ok=True)
        result = verify_state_dir(state)[0]
        assert result.ok, result.problem
        conn = sqlite3.connect(f"file:{state}/audit/full.db?mode=ro", uri=True)
        stored = dict(conn.execute("SELECT seq, body FROM records"))
        conn.close()
        assert len(recorder.acked) >= 3 * stopped_at  # created, and 3 per call that ran
        for seq, record_id in recorder.acked.items():  # no acknowledged record is lost
            assert f'"id":"{record_id}"'.encode() in stored[seq]
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
