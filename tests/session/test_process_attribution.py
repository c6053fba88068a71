"""Only the agent's processes are judged: bastion's own never are.

At 32-64 concurrent sessions the sandbox launch line of one session (nsenter, setpriv,
bwrap with ``--ro-bind /dev/null /etc/shadow``) was attributed to another session and
killed as ``credentials.exec_shadow_read``: its pid had belonged to a process of that
session whose exit the sensor never saw, and the exec was charged from the stale table
entry without reading the cgroup. Now a process is reported only from inside one of
the session's call cgroups, read on every exec, and a fork from outside every session
evicts whatever the table held under the new pid.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from bastion.contracts import CallRef
from bastion.events import EventKind
from bastion.sensors import ProcessSensor, netlink
from bastion.sensors.guard import Observed
from bastion.sensors.process import _Proc
from bastion.testing import FakeWatched, RecordingSink
from tests.conftest import wait_for


@pytest.fixture
def sensor() -> Iterator[ProcessSensor]:
    s = ProcessSensor(mode="poll", poll_interval=60)  # driven by hand below
    yield s
    s.close()


def test_a_recycled_pid_is_not_charged_to_the_session_it_once_belonged_to(sensor):
    view = FakeWatched(session_id="s-victim", cgroups={"call-1": CallRef("c1", 1)})
    sink = RecordingSink()
    observed = Observed(view, sink)
    # a host process (standing in for another session's launcher) with a pid that the
    # table still holds as call c1's, from an exit the sensor missed
    host = subprocess.Popen(["/bin/sleep", "5"])
    try:
        assert wait_for(lambda: open(f"/proc/{host.pid}/comm").read().strip() == "sleep")
        with sensor._lock:
            sensor._table[host.pid] = _Proc(observed, CallRef("c1", 1), 1, "bash", "bash")
            sensor._handle(netlink.ProcEvent(netlink.EXEC, 1, host.pid, host.pid))
        assert sink.events == []  # its cgroup is not one of the session's calls
    finally:
        host.kill()
        host.wait()


def test_a_fork_from_outside_every_session_evicts_a_stale_entry(sensor):
    view = FakeWatched(session_id="s-victim", cgroups={"call-1": CallRef("c1", 1)})
    observed = Observed(view, RecordingSink())
    with sensor._lock:
        sensor._table[4242] = _Proc(observed, CallRef("c1", 1), 1, "bash", "bash")
        # pid 4242 is forked anew by a process no session owns (bastion itself)
        sensor._handle(netlink.ProcEvent(netlink.FORK, 1, 4242, 4242, 1, 1))
        assert 4242 not in sensor._table


def test_bastion_processes_in_init_are_tracked_but_never_reported(sensor):
    view = FakeWatched(session_id="s-x")
    sink = RecordingSink()
    observed = Observed(view, sink)
    with sensor._lock:
        # the supervisor (in <session>/init, no call) forks and exits: nothing reported
        sensor._table[5000] = _Proc(observed, None, 1, "python3", "python3 -I -S -c ...")
        sensor._handle(netlink.ProcEvent(netlink.FORK, 1, 5001, 5001, 5000, 5000))
        assert 5001 in sensor._table  # followed, in case it becomes a call's process
        sensor._handle(netlink.ProcEvent(netlink.EXIT, 2, 5001, 5001))
    assert sink.of_kind(EventKind.FORK) == [] and sink.of_kind(EventKind.EXIT) == []


@pytest.mark.needs_root
def test_a_real_session_reports_no_launcher_or_supervisor(make_session):
    s = make_session()
    s.exec("true", call_id="c1")
    s.settle()
    judged = [e for e in s.events if e.kind in (EventKind.EXEC, EventKind.FORK, EventKind.EXIT)]
    assert judged
    assert all(e.call_id == "c1" for e in judged), [(e.kind, e.call_id, e.get("proc.name"))
                                                   for e in judged]
    names = {e.get("proc.name") for e in judged}
    assert not names & {"bwrap", "nsenter", "setpriv"}, names
    assert not any("/etc/shadow" in str(e.get("proc.cmdline")) for e in judged)
