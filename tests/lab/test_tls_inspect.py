"""TLS inspection (issue 11, ``network.tls_inspect``): the gateway terminates TLS to an
allowed name and inspects the plaintext like clear text. The attacks of
``test_tls_tunnels.py`` that only the burst shape could catch — a CONNECT inside TLS to
the relay on an allowed name, re-chunked so no shape shows, and Stratum spoken in TLS
to the relay — are cut on their first forbidden bytes, measured at the far end (the
relay's tunnel log, the pool's and relay's byte logs, the sshd's log); a client that
pins its own CA is refused before anything reaches the server; honest HTTPS clients
(trusting the system store the sandbox sees, or ``--cacert`` a lab+interception
bundle) run untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion import Session
from bastion.events import EventKind
from bastion.gateway.intercept import authority
from bastion.lab import Lab

from .conftest import LAB_POLICY, lab_trust
from .test_egress import wait_events

# a forwarder that re-chunks everything it sends (a few bytes at a time, at random
# pauses): no burst shape survives; it trusts the system store (the sandbox's)
RECHUNKER = r'''
import random, socket, ssl, sys, time
target = sys.argv[1]
ctx = ssl.create_default_context()
out = "none"
try:
    s = ctx.wrap_socket(socket.create_connection(("relay.allowed.lab.test", 443), timeout=5),
                        server_hostname="relay.allowed.lab.test")
    request = ("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode()
    for i in range(0, len(request), 3):
        s.sendall(request[i:i + 3])
        time.sleep(random.random() / 50)
    out = s.recv(200)[:40]
    for i in range(20):
        s.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" if i == 0 else b"x" * random.randint(1, 9))
        time.sleep(0.01)
except OSError as exc:
    out = "cut %s" % type(exc).__name__
print("result", out)
'''


def _tunnels(lab: Lab, target: str) -> int:
    return sum(1 for line in lab.relay_log() if line == f"connect {target}")


def test_rechunked_connect_inside_tls_is_cut_before_the_relay_opens_a_tunnel(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    """A CONNECT to the lab sshd and to the pool, sent three bytes at a time inside TLS
    to the relay: the inspector sees the request line, the relay never does."""
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/fwd.py", RECHUNKER)
    for n, target in enumerate(("203.0.113.66:22", "203.0.113.33:3333")):
        tunnels, sshd, pool = (_tunnels(lab, target), lab.sshd_connections(),
                               len(lab.pool_bytes()))
        r = session.exec(["python3", "/workspace/fwd.py", target], call_id=f"fwd{n}")
        assert "200" not in r.stdout, r.stdout + r.stderr
        assert _tunnels(lab, target) == tunnels
        assert lab.sshd_connections() == sshd and len(lab.pool_bytes()) == pool
    cut = wait_events(session, EventKind.NET_FLOW,
                      lambda e: e.get("net.rule") == "gateway.proxy_protocol")
    assert {e.call_id for e in cut} == {"fwd0", "fwd1"}
    assert all(e.get("net.tls_inspect") is True and e.get("net.sni") == "relay.allowed.lab.test"
               for e in cut)
    assert {v.call_id for v in session.verdicts if v.rule_id == "gateway.stream_cut"} \
        == {"fwd0", "fwd1"}


MINER = r'''
import json, socket, ssl
ctx = ssl.create_default_context()
sent = 0
try:
    s = ctx.wrap_socket(socket.create_connection(("relay.allowed.lab.test", 443), timeout=5),
                        server_hostname="relay.allowed.lab.test")
    for i in range(10):
        s.sendall(json.dumps({"id": i, "method": "mining.submit",
                              "params": ["W", "job%d" % i, "00", "5f", "%08x" % i]}).encode()
                  + b"\n")
        sent += 1
        if not s.recv(4096):
            break
except OSError as exc:
    print("cut", type(exc).__name__)
print("sent", sent)
'''


def test_stratum_inside_tls_to_the_relay_never_reaches_it(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/miner.py", MINER)
    relay = len(lab.relay_bytes())
    session.exec(["python3", "/workspace/miner.py"], call_id="miner")
    assert b"mining" not in lab.relay_bytes()[relay:]
    cut = wait_events(session, EventKind.NET_FLOW,
                      lambda e: e.get("net.rule") == "gateway.miner_protocol")
    assert cut and cut[0].call_id == "miner"
    assert any(v.rule_id == "gateway.stream_cut" and v.call_id == "miner"
               for v in session.verdicts)


PINNED = r'''
import socket, ssl
ctx = ssl.create_default_context(cafile="/workspace/lab-only.pem")  # pins the lab's CA
try:
    s = ctx.wrap_socket(socket.create_connection(("relay.allowed.lab.test", 443), timeout=5),
                        server_hostname="relay.allowed.lab.test")
    s.sendall(b"GET /pinned HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n\r\n")
    print("answered", s.recv(100)[:12])
except ssl.SSLError as exc:
    print("refused", exc.reason)
'''


def test_a_client_pinning_its_own_ca_is_refused_and_recorded(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/lab-only.pem", lab.ca_path.read_text())
    session.write_file("/workspace/pinned.py", PINNED)
    relay = len(lab.relay_bytes())
    r = session.exec(["python3", "/workspace/pinned.py"], call_id="pinned")
    assert "refused" in r.stdout and "answered" not in r.stdout, r.stdout + r.stderr
    assert lab.relay_bytes()[relay:] == b""
    closed = wait_events(session, EventKind.NET_CLOSE,
                         lambda e: e.get("net.rule") == "gateway.tls_untrusted")
    assert closed and closed[0].call_id == "pinned"
    assert closed[0].get("net.decision") == "deny" and "pins" in closed[0].get("net.reason")
    assert closed[0].get("net.bytes_out") == 0


HONEST = r'''
import re, socket, ssl
ctx = ssl.create_default_context()  # the system store the sandbox sees
s = ctx.wrap_socket(socket.create_connection(("allowed.lab.test", 443), timeout=10),
                    server_hostname="allowed.lab.test")
def response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    got = len(body)
    while got < length:  # counted, not kept: a 50 MB body
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += len(chunk)
    return head, got
for i in range(20):  # keep-alive
    s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n" % (i * 331))
    head, size = response(s)
    assert head.startswith(b"HTTP/1.1 200") and size == i * 331, (i, head, size)
s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n")
print("large", response(s)[1])
'''


def test_honest_https_passes_inspected(lab: Lab, make_session: Callable[..., Session]) -> None:
    """curl with no CA option (the system bundle the sandbox sees), curl with a
    lab+interception bundle over kept-alive requests, and a Python client doing 20
    kept-alive requests and a 50 MB download: all inspected, none cut or judged."""
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/ca.pem", lab_trust(lab))
    session.write_file("/workspace/honest.py", HONEST)
    plain = session.exec("curl -sS -m 10 https://allowed.lab.test/", call_id="curl")
    assert "hello" in plain.stdout, plain.stdout + plain.stderr
    urls = " ".join(f"https://allowed.lab.test/page{i}" for i in range(10))
    many = session.exec(f"curl -sS --cacert /workspace/ca.pem {urls} | grep -c hello",
                        call_id="curl-many")
    assert many.stdout.strip() == "10", many.stdout + many.stderr
    r = session.exec(["python3", "/workspace/honest.py"], call_id="honest", timeout=120)
    assert r.stdout.strip() == "large 50000000", r.stdout + r.stderr
    assert session.verdicts == []
    connects = [e for e in session.events if e.kind is EventKind.NET_CONNECT]
    assert connects and all(e.get("net.tls_inspect") is True for e in connects)
    assert not any(e.get("net.cut") for e in session.events
                   if e.kind in (EventKind.NET_FLOW, EventKind.NET_CLOSE))
    # the interception CA's key never went in: only certificates are in the bundle
    bundle = session.exec(["cat", "/etc/ssl/certs/ca-certificates.crt"]).stdout
    assert authority().pem.strip() in bundle and "PRIVATE KEY" not in bundle
