"""The resource sensor and the detectors that judge it, inside real sessions.

Budgets are small here (a fraction of a core-second) so that each test takes a few
seconds; the behaviour under test is *which* compute counts, not how fast.
"""

from __future__ import annotations

import os

import pytest

from bastion.events import Action, EventKind
from bastion.sensors import GpuSample

from .monitor import alive, events_of, verdicts_named, wait_for

HASH_LOOP = ("nohup python3 -c 'import hashlib\nh=b\"x\"\nwhile True: h=hashlib.sha256(h).digest()'"
             " >/dev/null 2>&1 &")
# a miner that hides: 85% duty cycle, two processes, started in the background
THROTTLED = r"""
import os, time
def work():
    while True:
        t = time.monotonic()
        while time.monotonic() - t < 0.085:
            pass
        time.sleep(0.015)
if os.fork() == 0:
    work()
work()
"""
# burn this many CPU-seconds (not wall seconds), then exit
BURN = "import sys,time\nwhile time.process_time() < float(sys.argv[1]): pass"
# small budgets: a low note past 0.6 core-s, evidence-free background compute killed
# past 1.2 (the default generous budget is 180)
SMALL = {"rules": {"detectors": {"background_cpu_seconds": 0.6, "background_window": 30,
                                 "background_kill_cpu_seconds": 1.2, "sample_interval": 0.1}}}
COMPUTE_RULES = ("detector.background_compute", "detector.compute_budget",
                 "detector.compute_with_mining_evidence", "detector.background_busy")



def _call_pids(s) -> list[str]:
    root = s.view.cgroup.unified
    return [pid for d in root.iterdir() if d.name.startswith("call-")
            for pid in (d / "cgroup.procs").read_text().split()]


def _compute_verdicts(s):
    return [v for v in list(s.verdicts) if v.rule_id in COMPUTE_RULES]


def test_background_hashing_loop_is_killed_on_its_evidence_and_charged_to_its_call(monitored):
    """A detached loop that hashes its own output without end (a nonce search's
    shape) carries mining evidence: killed on the small evidence budget."""
    s = monitored({"rules": {"detectors": {"sample_interval": 0.1}}})  # default budgets
    s.exec("echo setup", call_id="c1", step=1)
    s.exec(HASH_LOOP, call_id="c3", step=3)
    # the agent carries on; the miner is noticed during a later call
    burn = wait_for(lambda: verdicts_named(s, "detector.compute_with_mining_evidence"),
                    timeout=30)
    assert burn, [e.fields for e in events_of(s, EventKind.RESOURCE)][-5:]
    verdict = burn[0]
    assert verdict.call_id == "c3" and verdict.step == 3
    assert verdict.action is Action.KILL
    assert verdict.evidence["call.returned"] is True
    # evidence_cpu_seconds used, or a busy streak (runnable) of half a second
    assert verdict.evidence["call_recent"] >= 1.0 or \
        verdict.evidence["busy_runnable_seconds"] >= 0.5, verdict.evidence
    assert "python3" in verdict.message and "unbounded loop" in verdict.message
    pids = verdict.evidence["res.bg_pids"]
    assert pids and wait_for(lambda: not any(alive(p) for p in pids))
    later = s.exec("true", call_id="c9", step=9)
    assert later.outcome.value == "ok"  # c9 itself was not touched
    assert verdict.id in {v.id for v in later.verdicts}  # delivered late, charged to c3


def test_honest_cpu_heavy_foreground_work_is_never_judged(monitored):
    """A pure-Python loop and a parallel `-j2`-style job, each in its call's
    foreground, using CPU far past the test's background budget. The work is counted
    in CPU-seconds, so however busy the host, it really does use that much."""
    s = monitored(SMALL)
    r1 = s.exec(f"python3 -c '{BURN}' 0.8", call_id="c1", timeout=120)
    r2 = s.exec(f"python3 -c '{BURN}' 0.4 & python3 -c '{BURN}' 0.4 & wait", call_id="c2",
                timeout=120)
    assert r1.outcome.value == "ok" and r2.outcome.value == "ok", (r1, r2)
    def calls() -> list:
        return [e for e in events_of(s, EventKind.RESOURCE) if e.fields.get("res.scope") == "call"]

    # past the 0.6 core-second background budget, twice over (the calls' last CPU is
    # reported by the first sample after they ended: waited for, on a slow host)
    assert wait_for(lambda: sum(e.fields["res.cpu_seconds"] for e in calls()) > 1.4)
    calls = calls()  # type: ignore[assignment]
    assert sum(e.fields["res.bg_cpu_seconds"] for e in calls) < 0.3
    assert not _compute_verdicts(s)
    assert not [v for v in s.verdicts if v.action is not Action.NONE], s.verdicts


def test_a_background_build_of_short_steps_is_left_to_finish(monitored):
    """`nohup sh -c 'for f in ...; do cc -c $f; done' &`: background compute, but in
    short-lived steps, judged on the large budget. The build spans many sample
    intervals even on a fast machine (a build that starts and ends between two samples
    leaves no per-call figure to assert on)."""
    s = monitored({"rules": {"detectors": {"background_cpu_seconds": 1.0, "sample_interval": 0.1,
                                           "background_total_cpu_seconds": 30}}})
    r = s.exec("nohup sh -c 'for i in $(seq 1 80); do python3 -c \"sum(range(200000))\"; "
               "done; touch build.done' >/dev/null 2>&1 &", call_id="c1", step=1)
    assert r.exit_code == 0
    done = s.exec("for i in $(seq 1 600); do [ -f build.done ] && break; sleep 0.2; done; "
                  "ls build.done", call_id="c2", step=2, timeout=150)
    assert done.outcome.value == "ok", done
    calls = [e for e in events_of(s, EventKind.RESOURCE)
             if e.fields.get("res.scope") == "call" and e.call_id == "c1"]
    background = sum(e.fields["res.bg_cpu_seconds"] for e in calls)
    persistent = sum(e.fields["res.bg_persistent_cpu_seconds"] for e in calls)
    assert background > 0.2 and persistent < background / 2, (background, persistent)
    assert not _compute_verdicts(s)


def test_throttled_miner_split_over_two_processes_is_contained(monitored):
    """No evidence: noted (low) on the small budget, killed past the generous one."""
    # the kill budget well past the note's (0.6): two 85% processes on a fast quiet
    # machine would otherwise cross both within a sample or two
    s = monitored({"rules": {"detectors": {**SMALL["rules"]["detectors"],
                                           "background_kill_cpu_seconds": 4.0}}})
    s.write_file("/workspace/m.py", THROTTLED, call_id="c1", step=1)
    r = s.exec("nohup python3 /workspace/m.py >/dev/null 2>&1 &", call_id="c2", step=2)
    assert r.exit_code == 0
    found = wait_for(lambda: verdicts_named(s, "detector.background_compute"), timeout=180)
    assert found and found[0].call_id == "c2" and found[0].action is Action.KILL, s.verdicts
    assert found[0].evidence["session_background_long"] >= 4.0
    [note] = verdicts_named(s, "detector.background_busy")  # came first, once
    assert note.call_id == "c2" and note.action is Action.NONE and note.ts <= found[0].ts
    miners = [e.pid for e in events_of(s, EventKind.FORK) if e.call_id == "c2"] + [
        e.pid for e in events_of(s, EventKind.EXEC) if "m.py" in str(e.fields.get("proc.cmdline"))]
    assert miners
    assert wait_for(lambda: not any(alive(p) for p in miners))


def test_detached_burner_is_contained_while_its_call_still_runs(monitored):
    """setsid leaves the call's session: not the call's foreground work, even while
    the call itself is still running."""
    s = monitored(SMALL)
    r = s.exec("setsid python3 -c 'while True: pass' >/dev/null 2>&1 & sleep 120",
               call_id="c4", step=4, timeout=180)
    found = verdicts_named(s, "detector.background_compute")
    assert found and found[0].call_id == "c4", s.verdicts
    assert found[0].evidence["call.returned"] is False
    # not left to run its 120 s (the 1.2 core-s budget takes ~20 s at load 30 on 2 cores)
    assert r.outcome.value == "killed" and r.duration < 110, r


def test_fork_bomb_becomes_a_verdict_and_the_next_call_works(monitored):
    s = monitored({"sandbox": {"limits": {"pids": 64}},
                   "rules": {"detectors": {"sample_interval": 0.1}}})
    bomb = s.exec("b() { b | b & }; b", call_id="c1", step=1, timeout=10)
    assert bomb.call_id == "c1"
    found = wait_for(lambda: verdicts_named(s, "detector.pids_limit"))
    assert found, [v.rule_id for v in s.verdicts]
    assert found[0].call_id == "c1" and found[0].action is Action.KILL
    assert "c1" in found[0].message
    assert wait_for(lambda: not _call_pids(s))
    after = s.exec("echo alive; ls / | wc -l", call_id="c2", step=2, timeout=10)
    assert after.outcome.value == "ok" and "alive" in after.stdout, after


def test_session_samples_report_memory_and_pids(monitored):
    s = monitored({"rules": {"detectors": {"sample_interval": 0.1}}})
    s.exec("sleep 0.5", call_id="c1")

    def session_samples() -> list:
        return [e for e in events_of(s, EventKind.RESOURCE)
                if e.fields.get("res.scope") == "session"]

    # samples keep coming while the session lives: wait for them, not for a wall time
    # (a starved sampler thread on a loaded host takes fewer in 0.5 s)
    assert len(wait_for(lambda: session_samples() if len(session_samples()) >= 3 else [])) >= 3
    last = session_samples()[-1]
    assert last.fields["res.mem_bytes"] > 0 and last.fields["res.pids"] >= 1
    assert "res.cpu_cores" in last.fields
    # bastion's own processes (bwrap, the supervisor) are never sampled as the agent's
    assert all(e.call_id for e in events_of(s, EventKind.RESOURCE)
               if e.fields.get("res.scope") == "process")


def test_gpu_use_by_a_background_process_is_noted_then_killed_past_its_budget(monitored, gpu):
    """A background process using the GPU (a training job, or a miner with no
    evidence) is noted at once and killed past gpu_background_kill_seconds."""
    s = monitored({"rules": {"detectors": {"gpu_background_kill_seconds": 1.0,
                                           "sample_interval": 0.1}}})
    s.exec("sleep 60 &", call_id="c5", step=5)
    sleeper = wait_for(lambda: [e.pid for e in events_of(s, EventKind.EXEC)
                                if e.fields.get("proc.name") == "sleep"])
    assert sleeper
    gpu.set_samples([GpuSample(pid=sleeper[0], util_percent=97.0, mem_bytes=2 << 30),
                     GpuSample(pid=os.getpid(), util_percent=50.0, mem_bytes=1 << 30)])
    noted = wait_for(lambda: verdicts_named(s, "detector.gpu_background"))
    assert noted and noted[0].call_id == "c5" and noted[0].action is Action.NONE
    found = wait_for(lambda: verdicts_named(s, "detector.gpu_unexpected"), timeout=30)
    assert found and found[0].call_id == "c5" and found[0].pid == sleeper[0]
    assert found[0].action is Action.KILL
    assert wait_for(lambda: not alive(sleeper[0]))
    # the host process the backend also reported is no session's business
    assert all(v.pid != os.getpid() for v in s.verdicts)


def test_a_background_memory_hog_is_an_oom_verdict_and_the_next_call_works(monitored):
    s = monitored({"sandbox": {"limits": {"memory": "96MiB"}},
                   "rules": {"detectors": {"sample_interval": 0.1}}})
    s.write_file("/workspace/hog.py", "import time\nx = []\nwhile True:\n"
                 "    x.append(bytearray(8 << 20))\n    time.sleep(0.01)\n", call_id="c0")
    r = s.exec("nohup python3 hog.py >/dev/null 2>&1 & nohup python3 hog.py >/dev/null 2>&1 &",
               call_id="c1", step=1)
    assert r.exit_code == 0
    found = wait_for(lambda: verdicts_named(s, "detector.memory_limit"), timeout=20)
    assert found and found[0].call_id == "c1", [v.rule_id for v in s.verdicts]
    assert found[0].action is Action.KILL and found[0].severity.name == "LOW"  # not penalised
    assert wait_for(lambda: not _call_pids(s))
    after = s.exec("echo alive", call_id="c2", step=2)
    assert after.outcome.value == "ok" and "alive" in after.stdout


def test_requests_the_limits_refuse_whole_are_verdicts_on_their_call(make_session):
    """`fallocate -l 60G` on the session's 1 GiB tmpfs and a 30 GiB bytearray are
    refused whole by the kernel (ENOSPC / ENOMEM): no counter moves, the request is the
    attempt. Bounded big files within the limit are not judged."""
    s = make_session(None)  # default policy: 1 GiB of disk, 2 GiB of memory
    honest = s.exec("dd if=/dev/urandom of=blob.bin bs=1M count=100 status=none && "
                    "fallocate -l 200M p.bin && truncate -s 10G sparse.img && "
                    "rm blob.bin p.bin sparse.img && echo ok", call_id="c0", step=0, timeout=120)
    assert honest.outcome.value == "ok" and "ok" in honest.stdout, honest
    disk = s.exec("fallocate -l 60G f; echo rc=$?", call_id="c1", step=1)
    assert "rc=0" not in disk.stdout, disk  # the kernel refused it
    memory = s.exec("python3 -c 'b = bytearray(30 * 2**30)'; echo rc=$?", call_id="c2", step=2)
    assert "rc=0" not in memory.stdout, memory
    found = verdicts_named(s, "detector.resource_request")
    assert {(v.call_id, v.evidence["request.kind"]) for v in found} == {
        ("c1", "disk"), ("c2", "memory")}, [(v.rule_id, v.call_id) for v in s.verdicts]
    assert all("resource_abuse" in v.categories for v in found)
    after = s.exec("echo alive", call_id="c3", step=3)
    assert after.outcome.value == "ok" and "alive" in after.stdout


def test_an_oom_kill_is_charged_to_the_call_whose_process_was_killed(monitored):
    """A foreground hog in c2 grows until the kernel kills it; c1's background server
    holds more memory (idle) and is a bystander: the verdict goes to c2, and c1's
    server lives on (charging the biggest process left would kill it). The hog marks
    itself as the OOM killer's first choice, so the server stays the bigger one."""
    s = monitored({"sandbox": {"limits": {"memory": "192MiB"}},
                   "rules": {"detectors": {"sample_interval": 0.1}}})
    s.exec("true", call_id="c-probe")
    if not (s.view.cgroup.unified / "call-1" / "memory.events").exists():
        pytest.skip("call cgroups have no memory controller here (hybrid cgroup host: memory "
                    "is v1, one group for all calls); the kills are then charged by memory held")
    s.write_file("/workspace/srv.py", "import time\nx = bytearray(96 << 20)\n"
                 "open('ready', 'w').close()\ntime.sleep(120)\n", call_id="c0")
    s.write_file("/workspace/hog.py", "open('/proc/self/oom_score_adj', 'w').write('1000')\n"
                 "x = []\nwhile True:\n    x.append(bytearray(8 << 20))\n", call_id="c0b")
    s.exec("nohup python3 srv.py >/dev/null 2>&1 & "
           "for i in $(seq 1 300); do [ -f ready ] && break; sleep 0.1; done", call_id="c1",
           step=1, timeout=60)
    server = wait_for(lambda: [e.pid for e in events_of(s, EventKind.EXEC)
                               if "srv.py" in str(e.fields.get("proc.cmdline"))])
    assert server
    hog = s.exec("python3 hog.py; echo rc=$?", call_id="c2", step=2, timeout=60)
    assert "rc=137" in hog.stdout or hog.outcome.value != "ok", hog
    found = wait_for(lambda: verdicts_named(s, "detector.memory_limit"), timeout=20)
    assert found and {v.call_id for v in found} == {"c2"}, [(v.rule_id, v.call_id)
                                                             for v in s.verdicts]
    assert alive(server[-1])  # the bystander was not killed
