"""The session carries out what the responder planned, on real sessions.

A verdict is planted on a marker event (``Planted`` wraps the real test engine), goes
through the whole pipeline (record, plan, durable, execute, record the action) and the
test checks both what happened to the processes and what the trail says.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from bastion import Policy, Session
from bastion.errors import SessionBroken
from bastion.events import Action, Event, EventKind, Severity, Verdict
from bastion.respond import Responder
from bastion.results import Outcome
from tests.conftest import alive, wait_for
from tests.sensors.conftest import gpu, sensors  # noqa: F401
from tests.sensors.monitor import events_of, make_engine, verdicts_named

pytestmark = pytest.mark.needs_root


class Planted:
    """The test engine, plus the verdicts a test plants on a ``test.plant`` event."""

    def __init__(self, policy: Policy) -> None:
        self.inner = make_engine(policy)
        self.next: list[Verdict] = []

    @property
    def policy_hash(self) -> str:
        return self.inner.policy_hash

    def evaluate(self, event: Event) -> list[Verdict]:
        if event.fields.get("telemetry.sensor") == "test.plant":
            out, self.next = self.next, []
            return [replace(v, session_id=event.session_id, event_ids=(event.id,))
                    for v in out]
        return self.inner.evaluate(event)


class Acting(typing.NamedTuple):
    session: Session
    engine: Planted

    def act(self, action: Action, **kw: typing.Any) -> Verdict:
        """Plant one verdict asking for ``action``; return it with the action taken."""
        fields = kw.pop("fields", {})
        self.engine.next = [Verdict(rule_id="t.rule", severity=Severity.HIGH,
                                    message="test verdict", action=action, **kw)]
        [taken] = self.session.ingest(self.session.event(EventKind.TELEMETRY, **{
            "telemetry.sensor": "test.plant", "telemetry.reason": "planted", **fields}))
        return taken


@pytest.fixture
def acting(state_dir: Path, sensors) -> Iterator[Callable[..., Acting]]:  # noqa: F811
    made: list[Session] = []

    def make(policy: dict | None = None) -> Acting:
        pol = Policy.from_dict(policy) if policy else Policy.default()
        engine = Planted(pol)
        s = Session(pol, state_dir=state_dir, engine=engine, responder=Responder(pol.response))
        made.append(s)
        return Acting(s, engine)

    yield make
    for s in made:
        s.close()


def _actions(session: Session, name: str) -> list[Event]:
    return [e for e in events_of(session, EventKind.ACTION) if e.fields["action.name"] == name]



def _background_sleep(session: Session, call_id: str) -> int:
    session.exec("sleep 60 >/dev/null 2>&1 &", call_id=call_id)
    pids = wait_for(lambda: [e.pid for e in events_of(session, EventKind.EXEC)
                             if e.call_id == call_id and e.fields.get("proc.name") == "sleep"])
    assert pids
    return pids[0]


def test_deny_refuses_the_command_before_it_runs(acting):
    s = acting().session
    r = s.exec("echo forbidden-word > /workspace/proof", call_id="c1")
    assert r.outcome is Outcome.DENIED
    assert "test.forbidden_command" in r.stderr
    assert not (s.workspace / "proof").exists()
    [v] = verdicts_named(s, "test.forbidden_command")
    assert v.action is Action.DENY and v in r.verdicts
    [act] = _actions(s, "deny")
    assert act.fields["action.verdict"] == v.id and act.call_id == "c1"
    assert s.exec("echo fine", call_id="c2").stdout == "fine\n"


def test_forbidden_exec_is_killed_with_its_call(acting):
    s = acting().session
    r = s.exec("cp /bin/sleep ./xmrig-test && ./xmrig-test 30", call_id="c1", timeout=20)
    assert r.outcome is Outcome.KILLED and r.duration < 15  # killed, not its sleep of 30 s
    [v] = verdicts_named(s, "test.forbidden_exec")
    assert v.action is Action.KILL and v.call_id == "c1" and v in r.verdicts
    [act] = _actions(s, "kill")
    assert act.fields["action.ok"] is True and "c1" in act.fields["action.detail"]


def test_kill_by_pid_when_no_call_is_known(acting):
    a = acting()
    pid = _background_sleep(a.session, "c1")
    verdict = a.act(Action.KILL, pid=pid)
    assert verdict.action is Action.KILL and f"[{pid}]" in verdict.evidence["response"]
    assert wait_for(lambda: not alive(pid))
    [act] = _actions(a.session, "kill")
    assert act.fields["action.verdict"] == verdict.id


def test_kill_never_touches_a_host_process(acting):
    import subprocess

    a = acting()
    host_proc = subprocess.Popen(["sleep", "30"])
    try:
        verdict = a.act(Action.KILL, pid=host_proc.pid)
        assert "already gone" in verdict.evidence["response"]
        assert host_proc.poll() is None
    finally:
        host_proc.kill()
        host_proc.wait()


def test_cut_of_a_connection_that_is_not_open_kills_its_call(acting):
    a = acting()
    pid = _background_sleep(a.session, "c2")
    v = a.act(Action.CUT, call_id="c2", pid=pid, fields={"net.conn_id": "conn-gone"})
    assert v.action is Action.KILL
    assert "'conn-gone' not open" in v.evidence["response"]
    assert wait_for(lambda: not alive(pid))


def test_freeze_stops_every_process(acting):
    a = acting()
    pid = _background_sleep(a.session, "c1")
    v = a.act(Action.FREEZE)
    assert v.action is Action.FREEZE and a.session.frozen
    with open(f"/proc/{pid}/cgroup") as f:
        cgroup = f.read().split("0::", 1)[1].strip()
    assert a.session.sandbox.cgroup.frozen() and a.session.session_id in cgroup


def test_terminate_ends_the_episode(acting):
    a = acting()
    s = a.session
    pid = _background_sleep(s, "c1")
    v = a.act(Action.TERMINATE, call_id="c1")
    assert v.action is Action.TERMINATE and s.ended and "t.rule" in s.ended
    assert wait_for(lambda: not alive(pid))
    with pytest.raises(SessionBroken):
        s.exec("true")
    # nothing left to do for later containing verdicts: recorded as not carried out
    again = a.act(Action.KILL, call_id="c1")
    assert again.action is Action.NONE and "not carried out" in again.evidence["response"]


def test_the_trail_reads_command_verdict_action_lifecycle(acting, state_dir):
    """What the agent asked, why bastion stopped it, what it did, and then the end of
    the episode: in that order, in the durable trail, not only in memory."""
    from bastion.audit.reader import episode_records

    s = acting({"response": {"high": "terminate"}}).session
    r = s.exec("echo forbidden-word", call_id="c1")
    assert r.outcome is Outcome.TERMINATED
    s.close()  # ends on a checkpoint: everything is durable
    records, _ = episode_records(state_dir, s.episode_id)
    order = []
    for rec in records:
        if rec.type == "verdict" and rec.data.get("rule_id") == "test.forbidden_command":
            order.append("verdict")
        elif rec.type in ("event", "lifecycle", "action", "command"):
            kind = rec.data.get("kind")
            fields = rec.data.get("fields", {})
            if kind == "command" and rec.data.get("call_id") == "c1":
                order.append("command")
            elif kind == "action" and fields.get("action.rule") == "test.forbidden_command":
                order.append("action")
            elif kind == "lifecycle" and fields.get("life.state") == "terminated":
                order.append("terminated")
    assert order == ["command", "verdict", "action", "terminated"], order


def test_quarantine_keeps_workspace_and_process_list(acting, state_dir):
    a = acting()
    s = a.session
    s.exec("mkdir -p src && echo 'stolen' > src/loot.txt && ln -s /etc/hostname link "
           "&& mkfifo pipe", call_id="c1")
    pid = _background_sleep(s, "c2")
    v = a.act(Action.QUARANTINE, call_id="c2")
    assert v.action is Action.QUARANTINE and s.ended
    dest = state_dir / "quarantine" / s.session_id
    assert (dest / "workspace" / "src" / "loot.txt").read_text() == "stolen\n"
    assert os.readlink(dest / "workspace" / "link") == "/etc/hostname"  # kept, not followed
    assert not (dest / "workspace" / "pipe").exists()  # a FIFO is never opened
    procs = json.loads((dest / "processes.json").read_text())
    assert any(p["pid"] == pid and p["name"] == "sleep" for p in procs)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["verdict"]["rule_id"] == "t.rule" and manifest["files_skipped"] == 1
    assert wait_for(lambda: not alive(pid))


class _Hook(BaseHTTPRequestHandler):
    received: typing.ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_alert_posts_json_to_the_webhook(acting):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        s = acting({"response": {"high": "alert", "webhook": url}}).session
        r = s.exec("cp /bin/sleep ./minerd-test && ./minerd-test 0.2", call_id="c4", step=4)
        assert r.outcome is Outcome.OK  # alert only: nothing stopped
        assert wait_for(lambda: _Hook.received)
        payload = _Hook.received[0]
        assert payload["type"] == "bastion.verdict"
        assert payload["verdict"]["rule_id"] == "test.forbidden_exec"
        assert payload["verdict"]["call_id"] == "c4" and payload["verdict"]["action"] == "alert"
        assert payload["session"] == s.session_id
    finally:
        server.shutdown()


def test_failed_alert_delivery_is_recorded(acting):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    s = acting({"response": {"high": "alert", "webhook": f"http://127.0.0.1:{port}/"}}).session
    s.exec("cp /bin/sleep ./minerd-test && ./minerd-test 0.2", call_id="c1")
    failed = wait_for(lambda: [e for e in events_of(s, EventKind.TELEMETRY)
                               if e.fields.get("telemetry.sensor") == "webhook"])
    assert failed and "failed" in failed[0].fields["telemetry.reason"]
