"""Lingering commits (``TrailConfig.linger``): records nobody waits for share one
transaction, and anyone who waits has them committed at once, so acknowledgement is
never delayed and a crash loses no acknowledged record."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bastion import Event, EventKind
from bastion.audit import AuditTrail, TrailConfig, verify_state_dir
from tests.conftest import wait_for

# far longer than any test waits: if a waiter did not cut the linger short, its wait
# (wait_timeout) would fail instead of returning
_FOREVER = TrailConfig(durable_appends=False, linger=3600.0, wait_timeout=20.0)


def _ev(n: int) -> Event:
    return Event(EventKind.EXEC, run_id="r", episode_id="e", step=n, call_id=f"c{n}", pid=n,
                 fields={"proc.name": "p"})


def test_a_flush_commits_lingering_records_at_once_in_one_transaction(
        audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r", config=_FOREVER)
    try:
        before = trail.statistics().batches
        for n in range(7):  # a call's records: nobody waits for them
            assert trail.append_event(_ev(n)) is None
        assert trail.statistics().size == 0  # still queued, lingering
        assert trail.flush() == 7  # the flush cut the hour-long linger short
        stats = trail.statistics()
        assert stats.records == 7
        assert stats.batches == before + 1  # one transaction for all seven
    finally:
        trail.close()
    assert verify_state_dir(audit_state)[0].ok


def test_waiting_on_a_ticket_or_a_durable_append_commits_at_once(audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r", config=_FOREVER)
    try:
        ticket = trail.submit_event(_ev(0))
        assert ticket.wait() == 0
        durable = AuditTrail(audit_state, "r2", config=TrailConfig(linger=3600.0,
                                                                  wait_timeout=20.0))
        try:
            assert durable.append_event(_ev(1)) == 0  # durable appends wait: no linger
        finally:
            durable.close()
    finally:
        trail.close()


def test_records_nobody_waits_for_are_committed_after_the_linger(audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r", config=TrailConfig(durable_appends=False,
                                                            linger=0.05))
    try:
        for n in range(3):
            trail.append_event(_ev(n))
        assert wait_for(lambda: trail.statistics().size == 3)
    finally:
        trail.close()


def test_a_full_queue_is_committed_without_waiting_for_the_linger(audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r", config=TrailConfig(
        durable_appends=False, linger=3600.0, linger_records=4))
    try:
        for n in range(4):
            trail.append_event(_ev(n))
        assert wait_for(lambda: trail.statistics().size == 4)
    finally:
        trail.close()


def test_close_commits_what_lingers(audit_state: Path) -> None:
    trail = AuditTrail(audit_state, "r", config=_FOREVER)
    for n in range(5):
        trail.append_event(_ev(n))
    trail.close()
    result = verify_state_dir(audit_state)[0]
    assert result.ok and result.records == 5


_WRITER = """
import os, sys
from bastion import Event, EventKind
from bastion.audit import AuditTrail, TrailConfig
trail = AuditTrail(sys.argv[1], "r", config=TrailConfig(durable_appends=False, linger=3600.0))
def ev(n):
    return Event(EventKind.EXEC, run_id="r", episode_id="e", step=n, pid=n,
                 fields={"proc.name": "p"})
for n in range(5):
    trail.append_event(ev(n))
trail.flush()  # acknowledged: 0..4
for n in range(5, 9):
    trail.append_event(ev(n))  # queued, lingering, never acknowledged
print("acked", flush=True)
sys.stdin.read()  # killed here
"""


def test_sigkill_while_lingering_loses_no_acknowledged_record(audit_state: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(audit_state)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "acked"
    finally:
        proc.kill()
        proc.wait()
    result = verify_state_dir(audit_state)[0]
    assert result.ok
    assert result.records >= 5  # every acknowledged record survived the kill


def test_commit_soon_starts_the_commit_without_waiting(audit_state: Path) -> None:
    """What a session does once a command is judged: its records' commit starts at
    once (overlapping the call's launch) instead of lingering until the flush."""
    trail = AuditTrail(audit_state, "r", config=_FOREVER)
    try:
        trail.append_event(_ev(0))
        trail.append_event(_ev(1))
        trail.commit_soon()
        assert wait_for(lambda: trail.statistics().size == 2)
        trail.commit_soon()  # nothing queued: nothing to do
        assert trail.statistics().size == 2
    finally:
        trail.close()
