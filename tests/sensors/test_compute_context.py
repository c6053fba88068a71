"""Compute in context, in real sessions with bastion's default policy and rule packs.

An agent runs a job longer than its tool call the way a person would: ``nohup python3
train.py > log 2>&1 &``, then later calls ``tail log``. By behaviour that job is a
detached busy loop until it ends, exactly like a burner; what tells a miner apart is
its *evidence* (a nonce search, Stratum, a wallet) or compute past the generous
``background_kill_cpu_seconds`` budget (``tests/sensors/test_busy.py``,
``tests/sensors/test_resources.py``). These tests try both sides: the honest job
finishes untouched and unpenalised, the miner with evidence is killed.
"""

from __future__ import annotations

import time

from bastion.events import Action, EventKind, Severity

from .monitor import alive, events_of, verdicts_named, wait_for

# a small CPU-bound training loop: 8 epochs of 0.5 CPU-second each (CPU time, not wall
# time, so it really uses that much however crowded the host), progress per epoch
TRAIN = r"""
import time
w = [0.0] * 64
for epoch in range(8):
    start = time.process_time()
    while time.process_time() - start < 0.5:
        for i in range(64):
            w[i] = w[i] * 0.999 + (i % 7) * 1e-3
    print(f"epoch {epoch} loss {sum(w):.4f}", flush=True)
print("done", flush=True)
"""
# a nonce search that never stops: hashes its own output in an unbounded loop
NONCE_SEARCH = ("nohup python3 -c 'import hashlib\nh=b\"x\"\nwhile True: "
                "h=hashlib.sha256(h).digest()' >/dev/null 2>&1 &")


def test_a_nohup_training_job_polled_with_tail_finishes_unpunished(make_session):
    s = make_session(None)  # the default policy, packs and detectors
    s.write_file("/workspace/train.py", TRAIN, call_id="c0", step=0)
    start = s.exec("nohup python3 train.py > log 2>&1 & echo started", call_id="c1", step=1)
    assert start.outcome.value == "ok" and "started" in start.stdout, start
    deadline, step, last = time.monotonic() + 300, 2, ""
    while time.monotonic() < deadline:
        poll = s.exec("sleep 1; tail -n 2 log", call_id=f"c{step}", step=step, timeout=60)
        assert poll.outcome.value == "ok", (poll, s.verdicts)
        last = poll.stdout
        if "done" in last:
            break
        step += 1
    assert "done" in last, (last, s.verdicts)  # the job ran to its end
    calls = [e for e in events_of(s, EventKind.RESOURCE)
             if e.fields.get("res.scope") == "call" and e.call_id == "c1"]
    background = sum(float(e.fields.get("res.bg_cpu_seconds") or 0.0) for e in calls)
    # it was background compute well past the small budgets (1.5 / 0.5 core-s)
    assert background > 2.0, background
    acted = [v for v in s.verdicts if v.action is not Action.NONE]
    assert not acted, acted
    penalty = s.policy.rl.penalty
    assert all(penalty.get(v.severity.name.lower(), 0.0) == 0.0 for v in s.verdicts), s.verdicts
    assert all(v.severity <= Severity.LOW for v in s.verdicts), s.verdicts


def test_a_detached_nonce_search_is_killed_on_its_evidence(make_session):
    s = make_session(None)
    r = s.exec(NONCE_SEARCH, call_id="c1", step=1)
    assert r.exit_code == 0
    found = wait_for(lambda: verdicts_named(s, "detector.compute_with_mining_evidence"),
                     timeout=60)
    assert found, [v.rule_id for v in s.verdicts]
    verdict = found[0]
    assert verdict.call_id == "c1" and verdict.action is Action.KILL
    assert verdict.severity is Severity.HIGH and "mining" in verdict.categories
    pids = verdict.evidence["res.bg_pids"]
    assert pids and wait_for(lambda: not any(alive(p) for p in pids))



# four hashers at 30% duty each: a miner split and throttled to look like nothing much
SPLIT_MINER = """import hashlib, time
n = 0
while True:
    t = time.time()
    while time.time() - t < 0.03:
        hashlib.sha256(str(n).encode()).digest(); n += 1
    time.sleep(0.07)
"""


def test_a_nonce_search_program_written_in_one_call_convicts_its_split_runs_in_another(
        make_session):
    """The program is judged when written (c1: a nonce search); the four throttled
    copies started in the background by c2 carry that evidence, whatever they are
    called when they run."""
    s = make_session(None)
    s.write_file("/workspace/w.py", SPLIT_MINER, call_id="c1", step=1)
    r = s.exec("for i in 1 2 3 4; do nohup python3 w.py >/dev/null 2>&1 & done; echo ok",
               call_id="c2", step=2)
    assert r.exit_code == 0
    found = wait_for(lambda: verdicts_named(s, "detector.compute_with_mining_evidence"),
                     timeout=90)
    assert found, [v.rule_id for v in s.verdicts]
    assert found[0].call_id == "c2" and found[0].action is Action.KILL
    # the evidence is the program written by c1, or (read since by the sensor from what
    # the busy processes run) the same nonce search in c2's own processes: either way
    # a nonce search, whichever the engine saw first
    message = found[0].message
    assert ("nonce-search program" in message and "call c1" in message) or \
        "(a nonce search)" in message, message
    miners = {e.pid for e in events_of(s, EventKind.EXEC)
              if "w.py" in str(e.fields.get("proc.cmdline"))}
    assert len(miners) >= 4 and wait_for(lambda: not any(alive(p) for p in miners))
    written = verdicts_named(s, "mining.hash_spin_code")
    assert written and written[0].call_id == "c1" and written[0].action is Action.NONE
