"""Long-lived connections are reported while they live, and a verdict that refuses a
connection is obeyed before anything is dialled."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion import Session
from bastion.events import Action, Event, EventKind, Severity, Verdict
from bastion.gateway import server
from bastion.lab import Lab
from tests.conftest import wait_for

from .conftest import LAB_POLICY, lab_trust

KEEPALIVE = r"""
import socket, time
s = socket.create_connection(("allowed.lab.test", 80), timeout=5)
for i in range(3):
    s.sendall(b"GET /%d HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n" % i)
    print(s.recv(4096).split(b"\r\n")[0].decode())
    time.sleep(1.2)
s.close()
"""


def test_long_lived_connection_yields_flow_events(
        lab: Lab, make_session: Callable[..., Session], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "FLOW_INTERVAL", 0.5)
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/keep.py", KEEPALIVE)
    r = session.exec(["python3", "/workspace/keep.py"])
    assert r.stdout.count("HTTP/1.1 200 OK") == 3, r.stderr
    wait_for(lambda: [e for e in session.events if e.kind is EventKind.NET_CLOSE])
    flows = [e for e in session.events if e.kind is EventKind.NET_FLOW]
    close = [e for e in session.events if e.kind is EventKind.NET_CLOSE]
    assert len(flows) >= 2 and len(close) == 1
    assert flows[0].get("net.conn_id") == close[0].get("net.conn_id")
    assert flows[-1].get("net.bytes_out") <= close[0].get("net.bytes_out")
    assert close[0].get("net.duration") >= 3.0


class OneRuleEngine:
    """A one-rule engine (the Engine protocol): refuse connections to one name."""

    policy_hash = "test"

    def __init__(self, name: str) -> None:
        self.name = name

    def evaluate(self, event: Event) -> list[Verdict]:
        if event.kind is EventKind.NET_CONNECT and event.get("net.sni") == self.name:
            return [Verdict("test.no_allowed", Severity.HIGH, "no", action=Action.DENY,
                            session_id=event.session_id, event_ids=(event.id,))]
        return []


def test_refusing_verdict_wins_over_the_allow_list(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True, engine=OneRuleEngine("allowed.lab.test"))
    session.write_file("/workspace/ca.pem", lab_trust(lab))
    before = lab.counters()["allowed"]
    r = session.exec("curl -sS -m 5 --cacert /workspace/ca.pem https://allowed.lab.test/")
    assert r.exit_code != 0 and "reset" in r.stderr.lower()
    assert lab.counters()["allowed"] == before
    assert any(v.rule_id == "test.no_allowed" for v in session.verdicts)


PHASED = r"""
import socket, sys, time
s = socket.create_connection(("denied.lab.test", 80), timeout=5)
s.sendall(b"GET /1 HTTP/1.1\r\nHost: denied.lab.test\r\n\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode(), flush=True)
open("/workspace/ready", "w").close()
for _ in range(3000):  # until the test has switched the phase (30 s at most)
    try:
        open("/workspace/go").close()
        break
    except OSError:
        time.sleep(0.01)
try:
    s.sendall(b"GET /2 HTTP/1.1\r\nHost: denied.lab.test\r\n\r\n")
    data = s.recv(4096)
    print("second:", data.split(b"\r\n")[0].decode() if data else "closed")
except OSError as exc:
    print("second:", type(exc).__name__)
"""


def test_phase_switch_cuts_connections_the_new_phase_refuses(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    import threading

    policy = {**LAB_POLICY, "network": {**LAB_POLICY["network"], "initial_phase": "setup"}}
    session = make_session(policy, lab=True)
    session.write_file("/workspace/phased.py", PHASED)
    ready = session.workspace / "ready"
    result: list[object] = []
    runner = threading.Thread(target=lambda: result.append(
        session.exec(["python3", "/workspace/phased.py"], call_id="bg")))
    runner.start()
    assert wait_for(ready.exists)
    session.set_network_phase("agent")
    (session.workspace / "go").write_text("")  # the second request only after the switch
    runner.join(60)
    out = result[0].stdout  # type: ignore[attr-defined]
    assert out.startswith("HTTP/1.1 200 OK"), out
    assert "second: HTTP/1.1 200" not in out, out
    closes = wait_for(lambda: [e for e in session.events if e.kind is EventKind.NET_CLOSE])
    assert closes and closes[0].get("net.cut", "").startswith("phase agent")
