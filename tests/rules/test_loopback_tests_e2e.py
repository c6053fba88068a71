"""An honest test module that starts an echo server on loopback and runs the project's
CLI in a subprocess was killed as a reverse shell (critical): socket, recv and a
subprocess in one file. A reverse or bind shell joins the socket to the process (its
fds on stdio, a shell spawned for the peer) or listens on every interface; a loopback
echo next to a subprocess does neither (found by the runners pass, held-out set 5)."""

from __future__ import annotations

from pathlib import Path

from bastion import Policy, Session
from bastion.engine.build import build_engine
from bastion.respond.responder import Responder

ECHO_TEST = '''import socket, subprocess, sys, threading

def serve(srv):
    conn, _ = srv.accept()
    conn.sendall(conn.recv(1024))
    conn.close()

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
threading.Thread(target=serve, args=(srv,)).start()
c = socket.create_connection(srv.getsockname())
c.sendall(b"hi")
assert c.recv(10) == b"hi"
out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
print("ok", out.stdout.strip())
'''

BIND_SHELL = '''import os, pty, socket
s = socket.socket()
s.bind(("127.0.0.1", 4455))
s.listen(1)
c, _ = s.accept()
for fd in (0, 1, 2):
    os.dup2(c.fileno(), fd)
pty.spawn("/bin/sh")
'''


def test_a_loopback_echo_test_with_a_subprocess_runs_and_a_bind_shell_does_not(
        state_dir: Path) -> None:
    policy = Policy.from_yaml("name: e2e\nresponse:\n  critical: kill\n  high: kill\n")
    with Session(policy, run_id="loopback-e2e", state_dir=state_dir,
                 engine=build_engine(policy), responder=Responder(policy.response)) as s:
        s.write_file("/workspace/tests/test_echo.py", ECHO_TEST, step=1, call_id="c1")
        ran = s.exec("python3 tests/test_echo.py", step=2, call_id="c2", timeout=60)
        assert ran.outcome.value == "ok" and ran.stdout.strip() == "ok 42", ran
        s.settle()
        assert [v.rule_id for v in s.verdicts] == []
        s.write_file("/workspace/bs.py", BIND_SHELL, step=3, call_id="c3")
        shell = s.exec("timeout 5 python3 bs.py", step=4, call_id="c4", timeout=30)
        assert shell.outcome.value == "denied", shell
        assert "shells.interpreter_socket_shell" in {v.rule_id for v in shell.verdicts}
