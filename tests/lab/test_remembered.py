"""A connect judged moments ago with no verdict is decided on the gateway's loop (no
round trip to the session's executor): issue 11's connect-latency work. What must hold,
each checked in a real session against the lab:

* every connection is still recorded (a ``net.connect`` per connection, charged to its
  call) and still seen by the rules;
* only the very same connect is remembered (same process, call, destination and
  classification): another path, another process, another call is judged afresh;
* any verdict in the session voids what is remembered: the next connect is awaited;
* a destination the policy refuses is never carried by a remembered judgement (the
  allow list is applied to every connection; only the wait for the verdict is saved).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bastion import Session
from bastion.events import EventKind
from bastion.lab import Lab

from .conftest import LAB_POLICY

CLIENT = r"""
import socket, sys
for path in sys.argv[1:]:
    # the same address, naming a host the policy refuses
    host = "denied.lab.test" if path == "DENIED" else "allowed.lab.test"
    try:
        s = socket.create_connection(("allowed.lab.test", 80), timeout=5)
        s.sendall(b"GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                  % (path.encode(), host.encode()))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        print(path, data.split(b"\r\n", 1)[0].decode())
    except OSError as exc:
        print(path, "refused", type(exc).__name__)
"""

# an alert (not a stop) on one path: a verdict in the session, the connection carried
FLAG_RULE = """
- requires_engine: 1
- rule: test.flagged_path
  desc: a request for /flag (a test rule that alerts)
  condition: kind = net.connect and net.path = /flag
  output: "flagged %net.path"
  severity: low
  categories: [recon]
"""


def _connects(session: Session, call: str) -> list:
    return [e for e in session.events
            if e.kind is EventKind.NET_CONNECT and e.call_id == call]


def test_repeated_connects_are_remembered_recorded_and_voided_by_a_verdict(
        lab: Lab, make_session: Callable[..., Session], tmp_path: Path) -> None:
    rules = tmp_path / "flag.yaml"
    rules.write_text(FLAG_RULE)
    session = make_session({**LAB_POLICY, "rules": {"packs": [], "files": [str(rules)]}},
                           lab=True)
    session.write_file("/workspace/client.py", CLIENT)
    attachment = session._network  # type: ignore[attr-defined]
    paths = ["x", "x", "flag", "x", "x", "DENIED", "x"]
    r = session.exec(["python3", "/workspace/client.py", *paths], call_id="client")
    lines = r.stdout.splitlines()
    assert len(lines) == len(paths), r.stdout + r.stderr
    for path, line in zip(paths, lines):
        if path == "DENIED":
            assert "200" not in line, line  # refused whatever was remembered
        else:
            assert line.endswith("200 OK"), line
    connects = _connects(session, "client")
    # every connection recorded, in order, charged to its call
    assert [e.get("net.path") for e in connects] == ["/" + p if p != "DENIED" else "/DENIED"
                                                     for p in paths]
    assert [e.get("net.decision") for e in connects] == \
        ["deny" if p == "DENIED" else "allow" for p in paths]
    remembered = set(attachment.remembered)
    hit = [e.get("net.conn_id") in remembered for e in connects]
    # 1st judged; 2nd the same connect: remembered; /flag is another request: judged,
    # and its verdict voids the memory; so the 4th is judged again and the 5th
    # remembered; the refused one is judged; the last is the same as the 5th
    assert hit[:6] == [False, True, False, False, True, False], hit
    flagged = [v for v in session.verdicts if v.rule_id == "test.flagged_path"]
    assert flagged and flagged[0].call_id == "client"


def test_another_process_or_call_is_judged_afresh(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/client.py", CLIENT)
    attachment = session._network  # type: ignore[attr-defined]
    for call in ("one", "two"):
        r = session.exec(["python3", "/workspace/client.py", "x"], call_id=call)
        assert r.stdout.strip().endswith("200 OK"), r.stdout + r.stderr
    # the same destination and request, from a new process in a new call: not remembered
    for call in ("one", "two"):
        (connect,) = _connects(session, call)
        assert connect.get("net.conn_id") not in set(attachment.remembered)
