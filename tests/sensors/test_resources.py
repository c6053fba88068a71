"""The resource sensor and the detectors that use it, inside real sessions."""

from __future__ import annotations

import os
import time

from bastion.events import Action, EventKind
from bastion.sensors import GpuSample

from .monitor import events_of, verdicts_named, wait_for

HASH_LOOP = ("nohup python3 -c 'import hashlib\nh=b\"x\"\nwhile True: h=hashlib.sha256(h).digest()'"
             " >/dev/null 2>&1 &")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_background_hashing_loop_is_killed_and_charged_to_its_call(monitored):
    s = monitored()
    s.exec("echo setup", call_id="c1", step=1)
    started = time.monotonic()
    s.exec(HASH_LOOP, call_id="c3", step=3)
    # the agent carries on; the miner is noticed during a later call
    later = s.exec("sleep 2.5", call_id="c9", step=9)
    burn = verdicts_named(s, "detector.cpu_burn")
    assert burn, [e.fields for e in events_of(s, EventKind.RESOURCE)][-5:]
    verdict = burn[0]
    assert verdict.call_id == "c3" and verdict.step == 3
    assert verdict.action is Action.KILL
    assert verdict.evidence["res.burn_seconds"] >= 1.5
    assert "python3" in verdict.message
    killed_at = next(e.ts for e in events_of(s, EventKind.ACTION)
                     if e.fields.get("action.rule") == "detector.cpu_burn")
    assert (killed_at / 1e9) - started < 2.5
    assert verdict.pid is not None and wait_for(lambda: not _alive(verdict.pid))
    assert later.outcome.value == "ok"  # c9 itself was not touched
    assert verdict in s.calls["c3"].verdicts


def test_sha256sum_of_dev_zero_is_killed(monitored):
    s = monitored()
    s.exec("sha256sum /dev/zero >/dev/null 2>&1 &", call_id="c2", step=2)
    burn = wait_for(lambda: verdicts_named(s, "detector.cpu_burn"), timeout=4)
    assert burn and burn[0].call_id == "c2" and "sha256sum" in burn[0].message
    assert wait_for(lambda: not _alive(burn[0].pid))


def test_expected_processes_may_burn(monitored):
    s = monitored({"rules": {"detectors": {"expected_processes": ["sha256sum"]}}})
    r = s.exec("timeout 2 sha256sum /dev/zero", call_id="c1")
    assert r.exit_code == 124  # ran its full course
    assert not verdicts_named(s, "detector.cpu_burn")
    samples = [e for e in events_of(s, EventKind.RESOURCE)
               if e.fields.get("proc.name") == "sha256sum"]
    assert samples, [(e.pid, e.fields) for e in events_of(s, EventKind.RESOURCE)][-6:]
    assert max(e.fields["res.cpu_cores"] for e in samples) > 0.4  # busy CI hosts
    # the sensor measures the burn for rules (mining.sustained_burn) all the same
    assert max(e.fields["res.burn_seconds"] for e in samples) >= 1.0


def test_session_samples_report_memory_and_pids(monitored):
    s = monitored({"rules": {"detectors": {"sample_interval": 0.1}}})
    s.exec("sleep 0.5", call_id="c1")
    session_samples = [e for e in events_of(s, EventKind.RESOURCE)
                       if e.fields.get("res.scope") == "session"]
    assert len(session_samples) >= 3
    last = session_samples[-1]
    assert last.fields["res.mem_bytes"] > 0 and last.fields["res.pids"] >= 1
    assert "res.cpu_cores" in last.fields


def test_unexpected_gpu_use_is_killed(monitored, gpu):
    s = monitored()
    s.exec("sleep 30 &", call_id="c5", step=5)
    sleeper = wait_for(lambda: [e.pid for e in events_of(s, EventKind.EXEC)
                                if e.fields.get("proc.name") == "sleep"])
    assert sleeper
    gpu.set_samples([GpuSample(pid=sleeper[0], util_percent=97.0, mem_bytes=2 << 30),
                     GpuSample(pid=os.getpid(), util_percent=50.0, mem_bytes=1 << 30)])
    found = wait_for(lambda: verdicts_named(s, "detector.gpu_unexpected"), timeout=3)
    assert found and found[0].call_id == "c5" and found[0].pid == sleeper[0]
    assert found[0].action is Action.KILL
    assert wait_for(lambda: not _alive(sleeper[0]))
    # the host process the backend also reported is no session's business
    assert all(v.pid != os.getpid() for v in s.verdicts)
