"""The process sensor inside real sessions: events, attribution, partial records."""

from __future__ import annotations

import time

from bastion.events import EventKind

from .monitor import events_of, wait_for


def test_exec_fork_exit_are_attributed_to_the_call(monitored, sensors):
    s = monitored()
    r = s.exec("sh -c 'sleep 0.05; echo done'", step=4, call_id="c4")
    assert r.stdout == "done\n"
    execs = wait_for(lambda: [e for e in events_of(s, EventKind.EXEC)
                              if e.fields.get("proc.name") == "sleep"])
    assert execs, [e.fields for e in events_of(s, EventKind.EXEC)]
    sleep = execs[0]
    assert sleep.call_id == "c4" and sleep.step == 4
    assert sleep.fields["proc.args"] == ["sleep", "0.05"]
    assert sleep.fields["proc.exe"].endswith("/sleep")
    assert sleep.fields["proc.cwd"] == "/workspace"
    assert sleep.fields["proc.partial"] is False
    assert sleep.fields["proc.source"] == "netlink"
    assert sleep.fields["proc.pname"] in ("dash", "sh", "bash")
    assert sleep.ppid == sleep.ancestry[0]
    assert sleep.fields["proc.uid"] == s.host_uid
    exits = wait_for(lambda: [e for e in events_of(s, EventKind.EXIT) if e.pid == sleep.pid])
    assert exits and exits[0].fields["proc.exit_code"] == 0 and exits[0].call_id == "c4"
    forks = [e for e in events_of(s, EventKind.FORK) if e.pid == sleep.pid]
    assert forks and forks[0].ts <= sleep.ts <= exits[0].ts


def test_background_process_stays_charged_to_its_call(monitored, sensors):
    s = monitored()
    s.exec("setsid sh -c '(sleep 0.3; exec sleep 0.2) &' &", step=3, call_id="c3")
    s.exec("true", step=4, call_id="c4")
    late = wait_for(lambda: [e for e in events_of(s, EventKind.EXEC)
                             if e.fields.get("proc.cmdline") == "sleep 0.2"])
    assert late and late[0].call_id == "c3"


def test_process_that_vanished_before_proc_was_read_keeps_its_exec_time_argv(monitored, sensors):
    s = monitored()
    s.exec("true", call_id="warm")
    # Hold the sensor while a short process runs and exits: when it catches up the
    # kernel still reports the exec, but /proc/<pid> is gone. The argv the exec was
    # asked with was recorded by the exec listener while the exec waited.
    with sensors.process._lock:
        s.exec("/bin/sleep 0", call_id="c1")
        time.sleep(0.05)
    execs = wait_for(lambda: [e for e in events_of(s, EventKind.EXEC)
                              if e.call_id == "c1" and e.fields.get("proc.name") == "sleep"])
    assert execs, [e.fields for e in events_of(s, EventKind.EXEC)]
    ev = execs[0]
    assert ev.fields["proc.args"] == ["/bin/sleep", "0"]
    assert ev.fields["proc.argv_source"] == "exec"
    assert ev.fields["proc.partial"] is False
    assert ev.pid and ev.session_id == s.session_id
    assert wait_for(lambda: [e for e in events_of(s, EventKind.EXIT) if e.pid == ev.pid])


def test_host_processes_are_not_reported(monitored, sensors):
    import subprocess

    s = monitored()
    host_proc = subprocess.Popen(["/bin/sleep", "0.01"])
    s.exec("sleep 0.01", call_id="c1")
    host_proc.wait()
    time.sleep(0.1)
    pids = {e.pid for e in s.events if e.pid}
    assert host_proc.pid not in pids
    assert all(e.session_id == s.session_id for e in s.events)


def test_polling_fallback_marks_the_gap(state_dir):
    from bastion.sensors import ProcessSensor

    from .monitor import bare_host, monitored_session, verdicts_named

    sensor = ProcessSensor(mode="poll", poll_interval=0.02)
    bare_host(state_dir).add_observer(sensor)
    s = monitored_session(state_dir)
    try:
        gap = [e for e in events_of(s, EventKind.TELEMETRY) if e.fields.get("telemetry.gap")]
        assert gap and "polling" in gap[0].fields["telemetry.reason"]
        assert verdicts_named(s, "telemetry.degraded")
        s.exec("sleep 0.3", call_id="c1")
        polled = wait_for(lambda: [e for e in events_of(s, EventKind.EXEC)
                                   if e.fields.get("proc.name") == "sleep"])
        assert polled and polled[0].fields["proc.source"] == "poll"
        assert polled[0].call_id == "c1"
        assert wait_for(lambda: [e for e in events_of(s, EventKind.EXIT)
                                 if e.pid == polled[0].pid])
    finally:
        s.close()
        sensor.close()
