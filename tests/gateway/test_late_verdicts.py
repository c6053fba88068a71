"""A connection decided from a remembered judgement is submitted all the same; its
verdicts come after it was dialled. A stop among them (or a failure to judge it) cuts
it, and any verdict at all voids what the session's gateway remembers."""

from __future__ import annotations

import socket
from concurrent.futures import Future

from bastion.events import Action, Severity, Verdict
from bastion.gateway.server import _Conn, _late_verdicts
from bastion.gateway.sniff import Sniff


class _Memory:
    """The part of an ``Attachment`` that ``_late_verdicts`` uses: its memory."""

    def __init__(self) -> None:
        self.forgotten = 0

    def forget_judged(self) -> None:
        self.forgotten += 1


def _conn(memory: _Memory) -> tuple[_Conn, socket.socket, socket.socket]:
    client, sandbox = socket.socketpair()
    server, far = socket.socketpair()
    conn = _Conn("conn-1", memory, client, server, {}, Sniff("tls"),  # type: ignore[arg-type]
                 ("203.0.113.10", 443))
    return conn, sandbox, far


def _cut(sandbox: socket.socket, far: socket.socket) -> bool:
    """Both ends see the connection closed (a cut shuts both sockets down)."""
    sandbox.settimeout(2)
    far.settimeout(2)
    return sandbox.recv(1) == b"" and far.recv(1) == b""


def _verdict(action: Action) -> Verdict:
    return Verdict(rule_id="test.rule", severity=Severity.HIGH, message="x", action=action)


def test_a_late_stop_cuts_and_voids_the_memory() -> None:
    memory = _Memory()
    conn, sandbox, far = _conn(memory)
    future: Future[list[Verdict]] = Future()
    future.add_done_callback(lambda f: _late_verdicts(memory, conn, f))  # type: ignore[arg-type]
    future.set_result([_verdict(Action.DENY)])
    assert _cut(sandbox, far)
    assert memory.forgotten == 1
    assert "remembered judgement" in conn.fields["net.cut"]


def test_a_failure_to_judge_cuts() -> None:
    memory = _Memory()
    conn, sandbox, far = _conn(memory)
    future: Future[list[Verdict]] = Future()
    future.set_exception(RuntimeError("the session's pipeline failed"))
    _late_verdicts(memory, conn, future)  # type: ignore[arg-type]
    assert _cut(sandbox, far)
    assert memory.forgotten == 1


def test_an_alert_voids_the_memory_but_keeps_the_connection() -> None:
    memory = _Memory()
    conn, sandbox, _far = _conn(memory)
    future: Future[list[Verdict]] = Future()
    future.set_result([_verdict(Action.ALERT)])
    _late_verdicts(memory, conn, future)  # type: ignore[arg-type]
    assert memory.forgotten == 1
    conn.client.sendall(b"still here")
    sandbox.settimeout(2)
    assert sandbox.recv(16) == b"still here"
    assert "net.cut" not in conn.fields


def test_no_verdict_changes_nothing() -> None:
    memory = _Memory()
    conn, _sandbox, far = _conn(memory)
    future: Future[list[Verdict]] = Future()
    future.set_result([])
    _late_verdicts(memory, conn, future)  # type: ignore[arg-type]
    assert memory.forgotten == 0
    conn.server.sendall(b"ok")
    far.settimeout(2)
    assert far.recv(2) == b"ok"
