"""One slow session never stalls another.

Session A is quarantined (its workspace copied, which takes a while) because of a
process it started; while that runs, session B's agent starts hundreds of processes.
The process sensor serves both from one thread. Before the per-session executor, A's
quarantine ran on that thread and B's events waited behind it (and could overflow the
socket, freezing every session for telemetry loss). Now A's response runs on A's own
executor: B's events are all there, promptly, and nobody is frozen.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest

from bastion import ExecResult, Policy, Session
from bastion.events import Event, EventKind, Verdict
from bastion.respond import Responder
from bastion.respond.quarantine import MAX_QUARANTINE_BYTES, _copy_workspace
from bastion.testing import MemoryRecorder
from tests.conftest import wait_for
from tests.sensors.monitor import make_engine

pytestmark = pytest.mark.needs_root

STORM = 300
STORM_CMD = f"for i in $(seq {STORM}); do /bin/true; done"


class TimedRecorder(MemoryRecorder):
    """Notes when each record reached the recorder (monotonic ns)."""

    def __init__(self) -> None:
        super().__init__()
        self.event_at: dict[str, int] = {}
        self.verdict_at: list[int] = []

    def append_event(self, event: Event) -> object:
        self.event_at[event.id] = time.monotonic_ns()
        return super().append_event(event)

    def append_verdict(self, verdict: Verdict) -> object:
        self.verdict_at.append(time.monotonic_ns())
        return super().append_verdict(verdict)


def _p99(values: list[float]) -> float:
    values = sorted(values)
    return values[max(0, int(len(values) * 0.99) - 1)]


def _delays(busy: Session, recorder: TimedRecorder, storm: ExecResult) -> list[tuple[float, int]]:
    """(kernel timestamp -> recorded, in ms; when recorded) for each process the storm
    started: one per /bin/true and one `seq`, children of the loop's bash. All of them
    must be there (a true that exited before /proc was read is reported partial,
    without a name, but reported)."""
    assert storm.ok, storm
    [loop] = [e for e in busy.events if e.kind is EventKind.EXEC and e.call_id == storm.call_id
              and e.fields.get("proc.name") == "bash"]

    def seen() -> list[Event]:
        return [e for e in list(busy.events) if e.kind is EventKind.EXEC and e.ppid == loop.pid]

    children = wait_for(lambda: len(seen()) >= STORM + 1 and seen())
    assert len(children) == STORM + 1
    return [((recorder.event_at[e.id] - e.ts) / 1e6, recorder.event_at[e.id])
            for e in children]


def _fill_until_copy_takes(workspace: Path, seconds: float) -> float:
    """Write 4 KiB files into ``workspace`` until quarantine's own copy of it takes at
    least ``seconds`` here; returns the last copy's time."""
    made = 0
    want = 1000
    while True:
        for i in range(made, want):
            (workspace / f"f{i:06d}.bin").write_bytes(b"x" * 4096)
        made = want
        with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
            t = time.monotonic()
            _copy_workspace(workspace, Path(scratch) / "w", MAX_QUARANTINE_BYTES)
            took = time.monotonic() - t
        if took >= seconds or made >= 60_000:
            return took
        want = min(60_000, int(made * 1.5 * seconds / max(took, 0.01)))


def _session(state_dir: Path, response: dict[str, str]) -> tuple[Session, TimedRecorder]:
    policy = Policy.from_dict({"response": response})
    recorder = TimedRecorder()
    s = Session(policy, state_dir=state_dir, engine=make_engine(policy),
                responder=Responder(policy.response), recorder=recorder)
    return s, recorder


def test_a_slow_quarantine_does_not_stall_another_session(state_dir: Path) -> None:
    slow, slow_rec = _session(state_dir, {"high": "quarantine"})
    busy, busy_rec = _session(state_dir, {"high": "alert"})
    try:
        # enough workspace that copying it takes a good while, on this machine: a fast
        # one copies 3000 files before B's storm has begun, so grow it until a copy
        # takes over half a second (the real one runs at nice 19: no faster)
        _fill_until_copy_takes(slow.workspace, 0.6)
        # the same storm with nothing else going on: how far behind the host itself is
        baseline = _delays(busy, busy_rec, busy.exec(STORM_CMD, call_id="c0", timeout=60))
        trigger = threading.Thread(target=slow.exec, args=(
            "cp /bin/sleep ./xmrig-test && ./xmrig-test 30",), kwargs={"call_id": "c1",
                                                                      "timeout": 60})
        trigger.start()
        assert wait_for(lambda: slow_rec.verdict_at, timeout=60), "no verdict in A"
        started = time.monotonic_ns()
        storm = busy.exec(STORM_CMD, call_id="c1", timeout=60)
        storm_done = time.monotonic_ns()
        trigger.join(60)
        assert storm.ok

        # A was quarantined, and the quarantine was still running when B's storm ended
        # (its action is recorded when the copy, at nice 19, is done: on a host whose
        # cores are busy that is long after B's storm)
        actions = wait_for(lambda: [e for e in slow.events if e.kind is EventKind.ACTION],
                           timeout=200, step=0.1)
        assert [a.fields["action.name"] for a in actions] == ["quarantine"], actions
        assert slow_rec.event_at[actions[0].id] > started

        # B lost nothing (every /bin/true was seen), no session froze for loss, and the
        # slow session added far less than its copy's time to how long B's events took to
        # be recorded at p99 (beside the same storm without it: the host's own lag)
        delays = _delays(busy, busy_rec, storm)
        for s in (slow, busy):
            assert not [v for v in s.verdicts if v.rule_id == "telemetry.loss"]
        assert not busy.frozen
        during = [d for d, at in delays if at < slow_rec.event_at[actions[0].id]]
        # (with the quarantine on the sensor's thread, none could be recorded during it)
        assert len(during) >= 10, "the storm hardly overlapped the quarantine"
        p99, base99 = _p99([d for d, _ in delays]), _p99([d for d, _ in baseline])
        print(f"storm of {STORM} execs during a quarantine: p99 {p99:.1f} ms "
              f"(alone: {base99:.1f} ms), {len(during)} recorded during the quarantine, "
              f"which took {(slow_rec.event_at[actions[0].id] - slow_rec.verdict_at[0]) / 1e6:.0f}"
              " ms")
        # (the bug this guards against held B's events for the whole copy: the bound is
        # half of what the copy took here, at least 300 ms by the workspace's size, so a
        # loaded host's jitter is not mistaken for it; figures belong in benchmarks)
        took = (slow_rec.event_at[actions[0].id] - slow_rec.verdict_at[0]) / 1e6
        assert p99 - base99 <= max(100.0, took / 2), (p99, base99, took,
                                                       (storm_done - started) / 1e6)
    finally:
        slow.close()
        busy.close()
