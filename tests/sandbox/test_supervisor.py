"""The in-sandbox supervisor under attack from the agent it serves.

Each test runs the attack from inside a real session (the agent's uid, its own calls)
and checks that it failed, or that it was noticed and the session ended with a
``monitor_tamper`` verdict, never a hang, a bare TimeoutError or a call run unwatched.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from bastion import Outcome, SessionBroken
from tests.conftest import wait_for

_FIND_SUPERVISOR = (
    "import os\n"
    "for p in os.listdir('/proc'):\n"
    "    if p.isdigit():\n"
    "        try: c = open(f'/proc/{p}/cmdline','rb').read()\n"
    "        except OSError: continue\n"
    "        if c.split(b'\\0')[0].endswith(b'python3') and c.split(b'\\0')[1:3] == [b'-I', b'-S']:\n"
    "            print(p); break\n"
)


def _refused_forks(cgroup) -> int:
    """The kernel's count of forks the agent's calls were refused at their pids limit
    (``pids.events``: the calls' v1 cgroup, or each call's v2 cgroup)."""
    files = ([cgroup.v1["pids"] / "calls" / "pids.events"] if "pids" in cgroup.v1
             else list(cgroup.unified.glob("call-*/pids.events")))
    total = 0
    for path in files:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                if line.startswith("max "):
                    total += int(line.split()[1])
    return total


def _supervisor_pid_inside(session) -> int:
    r = session.exec(["python3", "-c", _FIND_SUPERVISOR])
    assert r.exit_code == 0 and r.stdout.strip(), r.stderr
    return int(r.stdout.split()[0])


def _wait_ended(session, timeout: float = 30.0) -> float:
    t = time.monotonic()
    while session.ended is None:
        assert time.monotonic() - t < timeout, "the session did not notice the tampering"
        time.sleep(0.01)
    return time.monotonic() - t


def _tamper_verdicts(session):
    return wait_for(lambda: [v for v in session.verdicts
                             if v.rule_id == "monitor_tamper.supervisor_lost"])


def test_supervisor_memory_and_fds_are_out_of_reach(make_session) -> None:
    s = make_session()
    pid = _supervisor_pid_inside(s)
    attack = (
        "import sys\n"
        f"pid = {pid}\n"
        "for path, mode in ((f'/proc/{pid}/mem', 'r+b'), (f'/proc/{pid}/mem', 'rb'),\n"
        "                   (f'/proc/{pid}/environ', 'rb')):\n"
        "    try:\n"
        "        with open(path, mode) as f:\n"
        "            f.seek(0x1000); f.write(b'A' * 16) if 'r+' in mode else f.read(16)\n"
        "        print('OPENED', path, mode)\n"
        "    except OSError as e:\n"
        "        print('refused', path, e.errno)\n"
        "import os\n"
        "try:\n"
        "    print('FDS', os.listdir(f'/proc/{pid}/fd'))\n"
        "except OSError as e:\n"
        "    print('refused fd', e.errno)\n"
    )
    r = s.exec(["python3", "-c", attack])
    assert "OPENED" not in r.stdout and "FDS" not in r.stdout, r.stdout
    assert r.stdout.count("refused") == 4
    # the supervisor is intact and keeps serving
    assert s.exec("echo still served").stdout == "still served\n"
    assert s.ended is None


def test_stopped_supervisor_ends_the_session_with_a_verdict(make_session) -> None:
    s = make_session()
    pid = _supervisor_pid_inside(s)
    # from a background job, after the call has returned: nothing of bastion's is
    # waiting on the supervisor when it stops
    r = s.exec(f"(sleep 0.3; python3 -c 'import os; os.kill({pid}, 19)') >/dev/null 2>&1 &")
    assert r.outcome is Outcome.OK
    _wait_ended(s)
    verdicts = _tamper_verdicts(s)
    assert verdicts and verdicts[0].severity.name == "CRITICAL"
    assert "stopped" in verdicts[0].message
    with pytest.raises(SessionBroken):
        s.exec("echo never")
    # nothing of the session runs any more
    assert s.sandbox.cgroup.wait_empty(timeout=30)


def test_stop_during_a_call_is_session_broken_not_timeout(make_session) -> None:
    s = make_session()
    pid = _supervisor_pid_inside(s)
    t = time.monotonic()
    with pytest.raises(SessionBroken) as info:
        s.exec(["python3", "-c", f"import os, time; os.kill({pid}, 19); time.sleep(60)"])
    assert not isinstance(info.value, TimeoutError)
    assert time.monotonic() - t < 30  # not the call's 600 s timeout
    assert s.ended and "monitor_tamper" in s.ended
    assert _tamper_verdicts(s)
    with pytest.raises(SessionBroken):
        s.exec("echo never")


def test_killed_supervisor_ends_the_session_with_a_verdict(make_session) -> None:
    s = make_session()
    pid = _supervisor_pid_inside(s)
    with pytest.raises(SessionBroken):
        s.exec(["python3", "-c", f"import os, time; os.kill({pid}, 9); time.sleep(5)"])
    verdicts = _tamper_verdicts(s)
    assert verdicts and "killed" in verdicts[0].message
    assert verdicts[0].call_id == "c1"  # the call that did it
    with pytest.raises(SessionBroken):
        s.exec("echo never")


@pytest.mark.parametrize("attack", [
    # take the supervisor's file descriptors away: its next reply cannot pass an fd
    "import resource, sys; resource.prlimit({pid}, resource.RLIMIT_NOFILE, (4, 4))",
    # starve it: lowest priority (an unprivileged uid may only lower it)
    "import os; os.setpriority(os.PRIO_PROCESS, {pid}, 19)",
])
def test_changed_supervisor_limits_or_priority_end_the_session(make_session, attack) -> None:
    s = make_session()
    pid = _supervisor_pid_inside(s)
    try:
        r = s.exec(["python3", "-c", attack.format(pid=pid)])
    except SessionBroken:
        pass  # the watch saw the change (and ended the sandbox) before the call's end was read
    else:
        assert r.exit_code == 0, r.stderr  # the change itself is allowed by the kernel...
    _wait_ended(s)  # ...and noticed
    verdicts = _tamper_verdicts(s)
    assert verdicts and verdicts[0].severity.name == "CRITICAL"
    assert "changed" in verdicts[0].message
    with pytest.raises(SessionBroken):
        s.exec("echo never")


def test_a_reply_to_another_request_breaks_the_session(make_session) -> None:
    """``Sandbox.run`` matches the ``started`` reply to its own request id: a reply
    meant for another request (here a stray one queued ahead) is never acted on."""
    s = make_session()
    sandbox = s.sandbox
    import os as _os

    r, w = _os.pipe()
    sandbox._send({"op": "exec", "id": 10_000, "argv": [b"/bin/true"], "env": {}, "cwd": "/"},
                  (r, w, w))
    _os.close(r)
    _os.close(w)
    with pytest.raises(SessionBroken, match="answered request 10000"):
        s.exec("echo hi")


def test_supervisor_survives_the_agents_fork_bomb(make_session) -> None:
    s = make_session({"sandbox": {"limits": {"pids": 48}}})
    s.exec(":(){ :|:& };: >/dev/null 2>&1 &", timeout=5)
    # the bomb has hit the limit (the kernel refused it a fork), however fast or slow
    # the machine: the counter only grows
    assert wait_for(lambda: _refused_forks(s.sandbox.cgroup) > 0, timeout=60)
    held = s.sandbox.cgroup.pids_current()
    assert held is not None and held <= 48
    # the bomb holds every task the calls may have; a new call still starts
    r = s.exec("echo alive", timeout=60)
    assert r.stdout == "alive\n"
    assert s.ended is None


def test_supervisor_survives_the_agents_oom(make_session) -> None:
    """An agent's call that takes all the memory it may: the call is OOM-killed and
    told why; bastion's supervisor (accounted apart) is untouched and serves on."""
    s = make_session({"sandbox": {"limits": {"memory": "96MiB"}}})
    r = s.exec(["python3", "-c", "b = [bytearray(1 << 20) for _ in range(1024)]"])
    assert r.outcome is Outcome.KILLED and "memory limit" in (r.reason or "")
    assert s.sandbox.cgroup.supervisor_oom_kills() == 0
    assert s.exec("echo ok").stdout == "ok\n"
    assert s.ended is None
