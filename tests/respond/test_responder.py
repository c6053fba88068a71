"""Every response, carried out on real sessions."""

from __future__ import annotations

import json
import os
import socket
import threading
import typing
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from bastion.errors import SessionBroken
from bastion.events import Action, EventKind, Severity, Verdict
from bastion.respond import Responder
from bastion.results import Outcome
from tests.sensors.monitor import events_of, verdicts_named, wait_for


def _verdict(session, action: Action, **kw) -> Verdict:
    return Verdict(rule_id="t.rule", severity=Severity.HIGH, message="test verdict",
                   action=action, session_id=session.session_id, **kw)


def _actions(session, name: str):
    return [e for e in events_of(session, EventKind.ACTION) if e.fields["action.name"] == name]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _background_sleep(session, call_id: str) -> int:
    session.exec("sleep 60 >/dev/null 2>&1 &", call_id=call_id)
    pids = wait_for(lambda: [e.pid for e in events_of(session, EventKind.EXEC)
                             if e.call_id == call_id and e.fields.get("proc.name") == "sleep"])
    assert pids
    return pids[0]


def test_deny_refuses_the_command_before_it_runs(monitored):
    s = monitored()
    r = s.exec("echo forbidden-word > /workspace/proof", call_id="c1")
    assert r.outcome is Outcome.DENIED
    assert "test.forbidden_command" in r.stderr
    assert not (s.workspace / "proof").exists()
    [v] = verdicts_named(s, "test.forbidden_command")
    assert v.action is Action.DENY and v in r.verdicts
    [act] = _actions(s, "deny")
    assert act.fields["action.verdict"] == v.id and act.call_id == "c1"
    assert s.exec("echo fine", call_id="c2").stdout == "fine\n"


def test_forbidden_exec_is_killed_with_its_call(monitored):
    s = monitored()
    r = s.exec("cp /bin/sleep ./xmrig-test && ./xmrig-test 30", call_id="c1", timeout=20)
    # KILLED, or SIGKILL seen before the session noticed why (see the report to the lead)
    assert (r.outcome is Outcome.KILLED or r.signal == 9) and r.duration < 5
    [v] = verdicts_named(s, "test.forbidden_exec")
    assert v.action is Action.KILL and v.call_id == "c1" and v in r.verdicts
    [act] = _actions(s, "kill")
    assert act.fields["action.ok"] is True and "c1" in act.fields["action.detail"]


def test_kill_by_pid_when_no_call_is_known(monitored):
    s = monitored()
    pid = _background_sleep(s, "c1")
    verdict, events = Responder(s.policy.response).respond(_verdict(s, Action.KILL, pid=pid), s)
    assert verdict.action is Action.KILL and f"[{pid}]" in verdict.evidence["response"]
    assert wait_for(lambda: not _alive(pid))
    assert events[0].fields["action.name"] == "kill"


def test_kill_never_touches_a_host_process(monitored):
    import subprocess

    s = monitored()
    host_proc = subprocess.Popen(["sleep", "30"])
    try:
        verdict, _ = Responder(s.policy.response).respond(
            _verdict(s, Action.KILL, pid=host_proc.pid), s)
        assert "already gone" in verdict.evidence["response"]
        assert host_proc.poll() is None
    finally:
        host_proc.kill()
        host_proc.wait()


def test_cut_uses_the_gateway_hook_and_escalates_without_it(monitored):
    s = monitored()
    a, b = socket.socketpair()
    conns = {"k1": a}

    class Cutter:
        def cut(self, conn_id: str) -> bool:
            sock = conns.pop(conn_id, None)
            if sock is None:
                return False
            sock.shutdown(socket.SHUT_RDWR)
            return True

    responder = Responder(s.policy.response, cutter=Cutter())
    v, _ = responder.respond(_verdict(s, Action.CUT, evidence={"net.conn_id": "k1"}), s)
    assert v.action is Action.CUT and b.recv(1) == b""  # the peer sees the close
    pid = _background_sleep(s, "c2")
    v, _ = Responder(s.policy.response).respond(
        _verdict(s, Action.CUT, call_id="c2", pid=pid, evidence={"net.conn_id": "k2"}), s)
    assert v.action is Action.KILL and "no gateway" in v.evidence["response"]
    assert wait_for(lambda: not _alive(pid))
    a.close()
    b.close()


def test_freeze_stops_every_process(monitored):
    s = monitored()
    pid = _background_sleep(s, "c1")
    v, _ = Responder(s.policy.response).respond(_verdict(s, Action.FREEZE), s)
    assert v.action is Action.FREEZE and s.frozen
    with open(f"/proc/{pid}/cgroup") as f:
        cgroup = f.read().split("0::", 1)[1].strip()
    assert s.sandbox.cgroup.frozen() and s.session_id in cgroup


def test_terminate_ends_the_episode(monitored):
    s = monitored()
    pid = _background_sleep(s, "c1")
    v, _ = Responder(s.policy.response).respond(_verdict(s, Action.TERMINATE, call_id="c1"), s)
    assert v.action is Action.TERMINATE and s.ended and "t.rule" in s.ended
    assert wait_for(lambda: not _alive(pid))
    with pytest.raises(SessionBroken):
        s.exec("true")
    # nothing left to do for later containing verdicts: recorded as not carried out
    again, _ = Responder(s.policy.response).respond(_verdict(s, Action.KILL, call_id="c1"), s)
    assert again.action is Action.NONE and "not carried out" in again.evidence["response"]


def test_quarantine_keeps_workspace_and_process_list(monitored, state_dir):
    s = monitored()
    s.exec("mkdir -p src && echo 'stolen' > src/loot.txt && ln -s /etc/hostname link "
           "&& mkfifo pipe", call_id="c1")
    pid = _background_sleep(s, "c2")
    v, _ = Responder(s.policy.response).respond(_verdict(s, Action.QUARANTINE, call_id="c2"), s)
    assert v.action is Action.QUARANTINE and s.ended
    dest = state_dir / "quarantine" / s.session_id
    assert (dest / "workspace" / "src" / "loot.txt").read_text() == "stolen\n"
    assert os.readlink(dest / "workspace" / "link") == "/etc/hostname"  # kept, not followed
    assert not (dest / "workspace" / "pipe").exists()  # a FIFO is never opened
    procs = json.loads((dest / "processes.json").read_text())
    assert any(p["pid"] == pid and p["name"] == "sleep" for p in procs)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["verdict"]["rule_id"] == "t.rule" and manifest["files_skipped"] == 1
    assert wait_for(lambda: not _alive(pid))


class _Hook(BaseHTTPRequestHandler):
    received: typing.ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_alert_posts_json_to_the_webhook(monitored):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        s = monitored({"response": {"high": "alert", "webhook": url}})
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


def test_failed_alert_delivery_is_recorded(monitored):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    s = monitored({"response": {"high": "alert", "webhook": f"http://127.0.0.1:{port}/"}})
    s.exec("cp /bin/sleep ./minerd-test && ./minerd-test 0.2", call_id="c1")
    failed = wait_for(lambda: [e for e in events_of(s, EventKind.TELEMETRY)
                               if e.fields.get("telemetry.sensor") == "webhook"])
    assert failed and "failed" in failed[0].fields["telemetry.reason"]
