"""Hostile bytes from inside a session never break the gateway: each bad connection or
query is refused (or forwarded intact when it is well-formed and allowed), recorded,
and every other session keeps being served."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Policy, Session
from bastion.events import EventKind
from bastion.gateway.server import Gateway
from bastion.lab import Lab

from ..gateway.test_sniff import client_hello
from .conftest import LAB_POLICY, lab_trust

HELLO = client_hello("allowed.lab.test", ["http/1.1"])
REQUEST = b"GET / HTTP/1.1\r\nHost: allowed.lab.test\r\nUser-Agent: x\r\n\r\n"
QUERY = DNSRecord.question("allowed.lab.test", "A").pack()

SENDER = r"""
import json, socket, sys
out = []
for kind, hexdata in json.load(open("/workspace/payloads.json")):
    data = bytes.fromhex(hexdata)
    try:
        if kind == "dns":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
            s.sendto(data, ("198.51.100.53", 53))
            try:
                s.recv(4096); out.append("dns-answered")
            except socket.timeout:
                out.append("dns-silent")
        else:
            port = 443 if kind == "tls" else 80
            s = socket.create_connection(("203.0.113.80", port), timeout=2)
            s.sendall(data); s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
            out.append("tcp-closed")
    except OSError as exc:
        out.append("tcp-" + type(exc).__name__)
print(json.dumps(out))
"""


def _mutate(base: bytes) -> st.SearchStrategy[bytes]:
    def apply(edits: list[tuple[int, int]], cut: int) -> bytes:
        data = bytearray(base)
        for at, value in edits:
            data[at % len(data)] = value
        return bytes(data[:cut])
    return st.builds(apply, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                     min_size=1, max_size=6),
                     st.integers(0, len(base)))


PAYLOADS = st.one_of(
    st.tuples(st.just("tls"), _mutate(HELLO)),
    st.tuples(st.just("http"), _mutate(REQUEST)),
    st.tuples(st.just("http"), st.binary(min_size=1, max_size=300)),
    st.tuples(st.just("dns"), _mutate(QUERY)),
)


@pytest.fixture(scope="module")
def sessions(lab: Lab) -> Iterator[tuple[Session, Session]]:
    state = Path(tempfile.mkdtemp(prefix="bastion-test-", dir="/var/tmp"))
    os.chmod(state, 0o711)
    policy = Policy.from_dict(LAB_POLICY)
    fuzz = Session(policy, state_dir=state, lab=True)
    control = Session(policy, state_dir=state, lab=True)
    try:
        fuzz.write_file("/workspace/send.py", SENDER)
        control.write_file("/workspace/ca.pem", lab_trust(lab))
        yield fuzz, control
    finally:
        fuzz.close()
        control.close()
        shutil.rmtree(state, ignore_errors=True)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(PAYLOADS, min_size=5, max_size=15))
def test_malformed_input_never_breaks_the_gateway(
        sessions: tuple[Session, Session], payloads: list[tuple[str, bytes]]) -> None:
    fuzz, control = sessions
    before = len(fuzz.events)
    fuzz.write_file("/workspace/payloads.json",
                    json.dumps([[kind, data.hex()] for kind, data in payloads]))
    r = fuzz.exec(["python3", "/workspace/send.py"], timeout=60)
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)) == len(payloads)
    # every TCP payload was decided and recorded; every DNS datagram was handled
    new = fuzz.events[before:]
    tcp = [p for p in payloads if p[0] != "dns" and p[1]]
    assert len([e for e in new if e.kind is EventKind.NET_CONNECT]) >= len(tcp)
    assert all(e.get("net.decision") in ("allow", "deny")
               for e in new if e.kind is EventKind.NET_CONNECT)
    dns = [p for p in payloads if p[0] == "dns"]
    assert len([e for e in new if e.kind is EventKind.DNS_QUERY]) == len(dns)
    # and the gateway still serves another session
    ok = control.exec("curl -sS -m 5 --cacert /workspace/ca.pem https://allowed.lab.test/")
    assert ok.stdout == "hello from allowed.lab.test\n", ok.stderr
    gateway = Gateway.get()
    assert gateway._thread.is_alive() and gateway._poller.is_alive()
