"""Resource exhaustion gets a verdict, from the kernel's own counters, in real sessions.

A thread bomb that dies of its own "can't start new thread" (pids.events), a disk bomb
refused by the session's size-limited tmpfs (statfs), also when the filler deletes its
file in the same call or writes after its call returned.
"""

from __future__ import annotations

from bastion.events import Action

from .monitor import verdicts_named, wait_for

THREAD_BOMB = ("import threading, time\n"
               "for i in range(100000):\n"
               "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n")
FAST = {"rules": {"detectors": {"sample_interval": 0.1}}}


def test_a_thread_bomb_that_already_died_is_a_pids_verdict_on_its_call(monitored):
    s = monitored({"sandbox": {"limits": {"pids": 64}}, **FAST})
    s.exec("echo before", call_id="c1", step=1)
    s.write_file("/workspace/bomb.py", THREAD_BOMB, call_id="c2", step=2)
    r = s.exec("python3 bomb.py", call_id="c3", step=3, timeout=30)
    # held by pids.max: it dies of it, or (a slow host) is killed by the verdict first
    assert r.exit_code != 0, r
    assert "can't start new thread" in r.stderr or r.outcome.value == "killed", r
    found = wait_for(lambda: verdicts_named(s, "detector.pids_limit"))
    assert found, [v.rule_id for v in s.verdicts]
    assert found[0].call_id == "c3" and found[0].action is Action.KILL
    after = s.exec("echo alive", call_id="c4", step=4)
    assert after.outcome.value == "ok" and "alive" in after.stdout
    s.exec("sleep 0.5", call_id="c5", step=5)
    assert [v.call_id for v in verdicts_named(s, "detector.pids_limit")] == ["c3"]


def test_a_disk_bomb_deleted_in_its_own_call_still_gets_a_verdict(monitored):
    s = monitored({"sandbox": {"limits": {"disk": "32MiB"}}, **FAST})
    r = s.exec("head -c 80M /dev/zero > fill; ls -l fill; sleep 0.5; rm -f fill",
               call_id="c1", step=1, timeout=60)
    assert "33554432" in r.stdout or "No space" in r.stderr, r  # refused at the limit
    found = wait_for(lambda: verdicts_named(s, "detector.disk_limit"))
    assert found, [v.rule_id for v in s.verdicts]
    v = found[0]
    assert v.call_id == "c1" and "resource_abuse" in v.categories
    assert v.evidence["res.disk_bytes"] >= 32 * 1024 * 1024 - 65536
    assert v.action is not Action.KILL  # the limit holds it; recorded, not punished twice


def test_a_background_disk_filler_is_charged_to_the_call_that_started_it(monitored):
    s = monitored({"sandbox": {"limits": {"disk": "32MiB"}}, **FAST})
    r = s.exec("nohup sh -c 'sleep 0.3; head -c 80M /dev/zero > fill; sleep 30' "
               ">/dev/null 2>&1 &", call_id="c1", step=1)
    assert r.exit_code == 0
    s.exec("for i in $(seq 1 100); do [ -s fill ] && break; sleep 0.1; done; sleep 1",
           call_id="c2", step=2, timeout=60)
    found = wait_for(lambda: verdicts_named(s, "detector.disk_limit"))
    assert found and found[0].call_id == "c1", [(v.rule_id, v.call_id) for v in s.verdicts]


def test_honest_writes_under_the_disk_limit_raise_nothing(monitored):
    s = monitored({"sandbox": {"limits": {"disk": "32MiB"}}, **FAST})
    r = s.exec("head -c 8M /dev/urandom > data.bin && gzip -k data.bin && ls", call_id="c1",
               timeout=60)
    assert r.outcome.value == "ok", r
    s.exec("sleep 0.5", call_id="c2")
    assert not [v for v in s.verdicts if v.rule_id.startswith("detector.")], s.verdicts
