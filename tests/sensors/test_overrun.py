"""Fail closed: an agent that floods the process connector gets its session frozen."""

from __future__ import annotations

import time

from bastion.events import Action, EventKind, Severity
from bastion.sensors import ProcessSensor

from .monitor import bare_host, events_of, monitored_session, verdicts_named, wait_for


def test_netlink_overrun_freezes_the_session(state_dir):
    sensor = ProcessSensor(mode="netlink", rcvbuf=4096)  # tiny buffer: a few dozen messages
    bare_host(state_dir).add_observer(sensor)
    s = monitored_session(state_dir)
    try:
        s.exec("true", call_id="warm")
        # The agent forks hard (within the pids limit) while the sensor is busy.
        with sensor._lock:
            s.exec("for i in $(seq 200); do /bin/true; done", call_id="c1")
            time.sleep(0.05)
        loss = wait_for(lambda: verdicts_named(s, "telemetry.loss"))
        assert loss, [e.fields for e in events_of(s, EventKind.TELEMETRY)]
        assert loss[0].action is Action.FREEZE
        assert "ENOBUFS" in loss[0].message
        assert wait_for(lambda: s.frozen)
        assert s.sandbox is not None and s.sandbox.cgroup is not None
        assert s.sandbox.cgroup.frozen()
        assert sensor.losses >= 1
        actions = [e for e in events_of(s, EventKind.ACTION)
                   if e.fields.get("action.name") == "freeze"]
        assert actions and actions[0].fields["action.rule"] == "telemetry.loss"
    finally:
        s.close()
        sensor.close()


def test_sensor_that_falls_behind_is_recorded_but_does_not_freeze(state_dir):
    """Late is not lost: every event is still judged, so an honest episode on a loaded
    host is not frozen or penalised; the trail says the sensor ran behind."""
    sensor = ProcessSensor(mode="netlink", max_lag=0.2)
    bare_host(state_dir).add_observer(sensor)
    s = monitored_session(state_dir)
    try:
        with sensor._lock:
            s.exec("/bin/true", call_id="c1")
            time.sleep(0.4)  # the sensor is 400 ms behind the kernel when it resumes
        degraded = wait_for(lambda: verdicts_named(s, "telemetry.degraded"))
        assert degraded and "behind" in degraded[0].message
        assert degraded[0].severity <= Severity.LOW
        assert degraded[0].action not in (Action.FREEZE, Action.KILL, Action.TERMINATE)
        assert not verdicts_named(s, "telemetry.loss")
        assert not verdicts_named(s, "monitor_tamper.telemetry_loss")
        assert sensor.lagged >= 1 and sensor.losses == 0
        assert not s.frozen
        assert s.exec("echo still-here", call_id="c2").stdout == "still-here\n"
    finally:
        s.close()
        sensor.close()


def test_a_crashing_sensor_terminates_its_sessions(state_dir):
    import contextlib

    import pytest

    from bastion.errors import InternalError, SessionBroken

    sensor = ProcessSensor(mode="netlink")
    bare_host(state_dir).add_observer(sensor)
    s = monitored_session(state_dir)
    try:
        def broken(ev: object) -> None:
            raise RuntimeError("bug in the sensor")

        sensor._handle = broken  # type: ignore[method-assign]
        with contextlib.suppress(SessionBroken):  # the session may die mid-call
            s.exec("true", call_id="c1")
        assert wait_for(lambda: s.ended)
        assert "process sensor failed" in (s.ended or "")
        assert "bug in the sensor" in (sensor.broken or "")
        with pytest.raises(InternalError):
            monitored_session(state_dir)  # no new session may start unobserved
    finally:
        s.close()
        sensor.close()
