"""TLS inspection's pieces without a session: the interception CA and its leaves, TLS
through memory BIOs over a real socket pair, the inspectors chosen by what the
plaintext is, the policy switch and the sandbox's trust binds."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.errors import PolicyError
from bastion.gateway.intercept import (
    Authority,
    InboundInspector,
    LazyInspector,
    TlsPipe,
    authority,
    bundle_text,
)
from bastion.gateway.sniff import Sniff
from bastion.gateway.stream import Finding
from bastion.policy import Policy
from bastion.sandbox.sandbox import TRUST_PATH, trust_binds


def _sans(cert: x509.Certificate) -> list[str]:
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in alt.get_values_for_type(x509.DNSName)] + \
        [str(v) for v in alt.get_values_for_type(x509.IPAddress)]


def test_leaves_name_the_sni_or_the_address_and_chain_to_the_ca() -> None:
    ca = Authority()
    leaf = ca.leaf("relay.allowed.lab.test")
    assert _sans(leaf) == ["relay.allowed.lab.test"]
    assert leaf.issuer == ca.cert.subject
    leaf.verify_directly_issued_by(ca.cert)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert _sans(ca.leaf("203.0.113.66")) == ["203.0.113.66"]
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_leaf_contexts_are_cached_per_name() -> None:
    ca = Authority()
    first = ca.server_context("a.example.test")
    assert ca.server_context("A.example.test.") is first
    assert ca.minted == 1
    assert ca.server_context("b.example.test") is not first
    assert ca.minted == 2


def test_one_authority_per_process_and_no_key_in_the_bundle() -> None:
    assert authority() is authority()
    text = bundle_text(authority().pem)
    assert authority().pem in text and "PRIVATE KEY" not in text


def _pair_handshake(ca: Authority, trust: str | None, name: str = "relay.allowed.lab.test"
                    ) -> tuple[TlsPipe | Exception, ssl.SSLSocket | Exception]:
    """A server TlsPipe (fed the ClientHello it already read, like the gateway) against
    a real ssl client trusting ``trust`` (PEM) or nothing."""
    a, b = socket.socketpair()
    client_ctx = ssl.create_default_context()
    if trust:
        client_ctx.load_verify_locations(cadata=trust)
    results: list[object] = [None]

    def client() -> None:
        try:
            results[0] = client_ctx.wrap_socket(b, server_hostname=name)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            results[0] = exc

    thread = threading.Thread(target=client)
    thread.start()
    first = a.recv(65536)  # the ClientHello, read before the pipe exists
    server: TlsPipe | Exception
    try:
        server = TlsPipe(a, ca.server_context(name), server_side=True, first=first)
        server.handshake(5)
    except Exception as exc:  # noqa: BLE001
        server = exc
        a.close()
    thread.join(5)
    return server, results[0]  # type: ignore[return-value]


def test_a_client_trusting_the_ca_talks_through_the_pipe() -> None:
    ca = Authority()
    server, client = _pair_handshake(ca, ca.pem)
    assert isinstance(server, TlsPipe) and isinstance(client, ssl.SSLSocket)
    assert server.alpn is None  # the client offered none
    client.sendall(b"GET / HTTP/1.1\r\nHost: relay.allowed.lab.test\r\n\r\n")
    buffer = bytearray(4096)
    got = b""
    while b"\r\n\r\n" not in got:
        got += bytes(buffer[:server.recv_into(buffer)])
    assert got.startswith(b"GET / ")
    server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert client.recv(100).startswith(b"HTTP/1.1 200")
    server.close_write()
    assert client.recv(100) == b""  # a clean close_notify, not a ragged EOF
    client.close()
    assert server.recv_into(buffer) == 0


def test_a_client_pinning_another_ca_fails_the_handshake() -> None:
    ca, other = Authority(), Authority()
    server, client = _pair_handshake(ca, other.pem)
    assert isinstance(server, ssl.SSLError) and isinstance(client, ssl.SSLError)


def test_the_outbound_inspector_holds_a_dripped_connect_and_never_releases_it() -> None:
    inspector = LazyInspector(lambda sniff: None)
    request = b"CONNECT 203.0.113.66:22 HTTP/1.1\r\nHost: 203.0.113.66:22\r\n\r\n"
    found = None
    for i in range(0, len(request), 3):
        found = inspector.feed(request[i:i + 3])
        assert inspector.take() == b""
        if found:
            break
    assert found is not None and found.rule == "gateway.proxy_protocol"


def test_http_inside_tls_is_judged_from_the_first_request() -> None:
    seen: list[Sniff] = []

    def judge(sniff: Sniff) -> Finding | None:
        seen.append(sniff)
        return Finding("http", "gateway.host_changed", "no") if sniff.host == "evil.test" \
            else None

    inspector = LazyInspector(judge)
    inbound = InboundInspector(inspector)
    assert inbound.feed(b"SSH-2.0-x\r\n") is not None  # before the client spoke: scanned
    first = b"GET /a HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n"
    assert inspector.feed(first) is None and bytes(inspector.take()) == first
    assert inspector.http and [s.host for s in seen] == ["allowed.lab.test"]
    assert inbound.feed(b'{"method": "mining.subscribe"} SSH-2.0-x\r\n') is None  # a download
    found = inspector.feed(b"GET /b HTTP/1.1\r\nHost: evil.test\r\n\r\n")
    assert found is not None and found.rule == "gateway.host_changed"


def test_a_non_http_stream_is_scanned_whole_and_a_pause_settles_it() -> None:
    inspector = LazyInspector(lambda sniff: None)
    assert inspector.feed(b"GE") is None and inspector.undecided  # could still be HTTP
    assert inspector.settle() is None and inspector.http is False  # the client paused
    assert inspector.take() == b"GE"
    found = inspector.feed(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
    assert found is not None and found.rule == "gateway.miner_protocol"


def test_the_policy_switch_and_the_per_entry_opt_out() -> None:
    policy = Policy.from_dict({"name": "t", "network": {"tls_inspect": True, "phases": {
        "agent": {"allow": [{"domain": "a.test"}, {"domain": "b.test", "inspect": False},
                            {"domain": "c.test", "protocol": "tcp", "port": 9}]}}}})
    a, b, c = policy.network.phases["agent"].allow
    assert a.inspected(True) and not b.inspected(True) and not c.inspected(True)
    assert not a.inspected(False)
    for bad in ({"tls_inspect": "yes"}, {"tls_inspect": 1}, {"tls_ca": ["/nonexistent.pem"]}):
        with pytest.raises(PolicyError, match="tls_"):
            Policy.from_dict({"name": "t", "network": bad})


def test_the_sandbox_sees_the_bundle_over_the_system_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/ca-certificates.crt").write_text("system")
    (root / "etc/ssl/cert.pem").symlink_to("certs/ca-certificates.crt")
    bundle = tmp_path / "bundle.pem"
    binds = trust_binds(bundle, root)
    assert binds == ((str(bundle), TRUST_PATH),
                     (str(bundle), "/etc/ssl/certs/ca-certificates.crt"))
    assert trust_binds(None, root) == ()
