"""The resource sensor reads the kernel's limit counters once more when a session
ends: a memory bomb whose call was too short (or the host too busy) for any sample
to see it still gets its verdict, charged to its call."""

from __future__ import annotations

from bastion.events import EventKind

from .monitor import events_of, wait_for


def test_an_oom_kill_no_sample_saw_is_judged_at_close(monitored) -> None:
    # one sample at registration, the next 10 minutes later: only the last look can
    # see the OOM kill
    s = monitored({"sandbox": {"limits": {"memory": "96MiB"}},
                   "rules": {"detectors": {"sample_interval": 600}}})
    wait_for(lambda: [e for e in events_of(s, EventKind.RESOURCE)
                      if e.fields.get("res.scope") == "session"])
    r = s.exec("python3 -c \"a = []\nwhile True: a.append(bytearray(1 << 24))\"",
               call_id="c1", step=1, timeout=60)
    assert r.exit_code != 0
    assert not [v for v in s.verdicts if v.rule_id == "detector.memory_limit"]
    s.close()
    [limit] = [e for e in events_of(s, EventKind.RESOURCE)
               if e.fields.get("res.limit") == "memory"]
    assert limit.call_id == "c1" and limit.fields["res.limit_hits"] >= 1
    assert [v.call_id for v in s.verdicts if v.rule_id == "detector.memory_limit"] == ["c1"]
