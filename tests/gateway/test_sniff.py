"""The sniffers, byte by byte: no answer before the bytes that decide it, the right
answer once they are there, and never an exception on hostile input."""

from __future__ import annotations

import json
import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.gateway.sniff import MAX_PEEK, classify


def client_hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    """A real ClientHello from the ssl module (OpenSSL), captured from a memory BIO."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def assert_needs_all(data: bytes) -> None:
    """Every strict prefix asks for more bytes."""
    for i in range(len(data)):
        assert classify(data[:i]) is None, f"answered after {i} of {len(data)} bytes"


def test_tls_sni_and_alpn_byte_by_byte() -> None:
    hello = client_hello("allowed.lab.test", ["h2", "http/1.1"])
    assert_needs_all(hello)
    sniff = classify(hello)
    assert sniff is not None
    assert (sniff.app, sniff.sni, sniff.alpn) == ("tls", "allowed.lab.test", ("h2", "http/1.1"))
    assert sniff.name == "allowed.lab.test"
    assert sniff.error is None


def test_tls_without_sni() -> None:
    sniff = classify(client_hello(None))
    assert sniff is not None and sniff.app == "tls" and sniff.sni is None


def test_tls_hello_split_across_records() -> None:
    hello = client_hello("pool.lab.test")
    body = hello[5:]
    half = len(body) // 2
    split = (b"\x16\x03\x01" + half.to_bytes(2, "big") + body[:half]
             + b"\x16\x03\x01" + (len(body) - half).to_bytes(2, "big") + body[half:])
    assert_needs_all(split)
    sniff = classify(split)
    assert sniff is not None and sniff.sni == "pool.lab.test"


def test_tls_truncated_is_unknown_when_final() -> None:
    hello = client_hello("x.example")
    sniff = classify(hello[:40], final=True)
    assert sniff is not None and sniff.app == "unknown" and sniff.error


def test_tls_bad_server_name_is_an_error() -> None:
    hello = bytearray(client_hello("abc.example"))
    at = hello.find(b"abc.example")
    hello[at:at + 3] = b"a\x00c"
    sniff = classify(bytes(hello))
    assert sniff is not None and sniff.app == "tls" and sniff.error


def test_http_request_byte_by_byte() -> None:
    request = b"GET /simple/pip/ HTTP/1.1\r\nHost: PyPI.org:8080\r\nAccept: */*\r\n\r\n"
    assert_needs_all(request)
    sniff = classify(request)
    assert sniff is not None
    assert (sniff.app, sniff.method, sniff.host, sniff.port, sniff.path) == (
        "http", "GET", "pypi.org", 8080, "/simple/pip/")


def test_http_absolute_form_and_connect() -> None:
    sniff = classify(b"GET http://evil.example/a?b HTTP/1.1\r\n\r\n")
    assert sniff is not None and sniff.host == "evil.example" and sniff.path == "/a?b"
    sniff = classify(b"CONNECT pool.lab.test:3333 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sniff is not None
    assert (sniff.app, sniff.host, sniff.port) == ("http-connect", "pool.lab.test", 3333)


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\n\r\n",  # no Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",  # not a hostname
    b"GET / HTTP/1.1\r\nbroken\r\n\r\n",  # header without colon
    b"GET /\r\n\r\n",  # HTTP/0.9
])
def test_http_malformed_is_flagged(request_bytes: bytes) -> None:
    sniff = classify(request_bytes)
    assert sniff is not None and sniff.app == "http" and sniff.error


def test_ssh_banner_byte_by_byte() -> None:
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
    assert_needs_all(banner)
    sniff = classify(banner)
    assert sniff is not None
    assert (sniff.app, sniff.ssh_banner) == ("ssh", "SSH-2.0-OpenSSH_9.2p1 Debian-2")


@pytest.mark.parametrize("message,method", [
    ({"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5"]}, "mining.subscribe"),
    ({"id": 2, "method": "mining.authorize", "params": ["wallet.w1", "x"]}, "mining.authorize"),
    ({"id": 4, "method": "mining.submit", "params": ["w", "1", "0", "1", "2"]}, "mining.submit"),
    ({"id": 1, "jsonrpc": "2.0", "method": "login",
      "params": {"login": "4A...", "pass": "x", "agent": "XMRig/6.21"}}, "login"),
    ({"id": 1, "method": "eth_submitLogin", "params": ["0xabc"]}, "eth_submitLogin"),
])
def test_stratum_methods_byte_by_byte(message: dict, method: str) -> None:
    line = json.dumps(message).encode() + b"\n"
    for i in range(1, len(line) - 1):
        sniff = classify(line[:i])
        assert sniff is None or sniff.app == "stratum"  # a complete object may answer early
    sniff = classify(line)
    assert sniff is not None and (sniff.app, sniff.stratum_method) == ("stratum", method)


def test_plain_json_rpc_is_not_stratum() -> None:
    sniff = classify(b'{"jsonrpc":"2.0","id":1,"method":"textDocument/hover"}\n')
    assert sniff is not None and sniff.app == "json-rpc"


def test_socks() -> None:
    socks4 = b"\x04\x01\x0d\x05\xcb\x00\x71\x21user\x00"
    assert_needs_all(socks4)
    sniff = classify(socks4)
    assert sniff is not None and (sniff.app, sniff.host, sniff.port) == (
        "socks4", "203.0.113.33", 3333)
    socks4a = b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00pool.lab.test\x00"
    sniff = classify(socks4a)
    assert sniff is not None and (sniff.app, sniff.host) == ("socks4", "pool.lab.test")
    socks5 = b"\x05\x02\x00\x02"
    assert_needs_all(socks5)
    sniff = classify(socks5)
    assert sniff is not None and sniff.app == "socks5"


def test_silence_and_noise_are_unknown() -> None:
    assert classify(b"") is None
    sniff = classify(b"", final=True)
    assert sniff is not None and sniff.app == "unknown"
    sniff = classify(b"\x00\x01binary")
    assert sniff is not None and sniff.app == "unknown"
    sniff = classify(b"G" * MAX_PEEK)
    assert sniff is not None and sniff.app == "unknown"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2048), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, final: bool) -> None:
    sniff = classify(data, final=final)
    assert sniff is None or isinstance(sniff.app, str)
    assert classify(data, final=True) is not None


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_client_hello_never_raises(data: st.DataObject) -> None:
    hello = bytearray(HELLO)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(hello) - 1))
        hello[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(hello)))
    sniff = classify(bytes(hello[:cut]), final=True)
    assert sniff is not None
    if sniff.app == "tls" and sniff.sni is not None:
        assert all(c.isalnum() or c in "-_." for c in sniff.sni)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8),
       st.sampled_from([b"GET", b"POST", b"CONNECT", b"HEAD"]))
def test_mutated_http_never_raises(headers: list[bytes], method: bytes) -> None:
    request = method + b" / HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    sniff = classify(request, final=True)
    assert sniff is not None


HELLO = client_hello("allowed.lab.test", ["http/1.1"])
