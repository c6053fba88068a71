"""Whole-stream inspection, byte by byte: a miner, SSH or a proxy handshake is found
wherever it sits in the stream, however it is dressed, and honest traffic never is."""

from __future__ import annotations

import json
import os

import pytest

from bastion.gateway.sniff import Sniff
from bastion.gateway.stream import Finding, Inspector, scan

SUBSCRIBE = {"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}


def ws_frame(payload: bytes, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def feed_all(inspector: Inspector, data: bytes, step: int) -> Finding | None:
    for i in range(0, len(data), step):
        found = inspector.feed(data[i:i + step])
        if found:
            return found
    return None


STRATUM_VARIANTS = {
    "leading-space": b" " + json.dumps(SUBSCRIBE).encode() + b"\n",
    "leading-crlf": b"\r\n" + json.dumps(SUBSCRIBE).encode() + b"\n",
    "case": b'{"id":1,"method":"Mining.Subscribe","params":[]}\n',
    "spaces": b'{ "id" : 1 , "method" :  "mining.authorize" , "params":["w","x"]}\n',
    "params-first": b'{"params":["w","x"],"id":2,"method":"mining.authorize"}\n',
    "ping-first": b'{"id":0,"method":"ping","params":[]}\n'
                  + json.dumps(SUBSCRIBE).encode() + b"\n",
    "escaped": b'{"id":1,"method":"mining\\u002esubscribe","params":[]}\n',
    "xmrig-login": json.dumps({"id": 1, "jsonrpc": "2.0", "method": "login", "params": {
        "login": "WALLET", "pass": "x", "agent": "XMRig/6.21"}}).encode() + b"\n",
    "eth": b'{"id":1,"method":"eth_submitLogin","params":["0xabc"]}\n',
}


@pytest.mark.parametrize("name", sorted(STRATUM_VARIANTS))
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_stratum_found_however_dressed(name: str, step: int) -> None:
    found = feed_all(Inspector(), STRATUM_VARIANTS[name], step)
    assert found is not None and found.app == "stratum", name
    assert found.rule == "gateway.miner_protocol"


def test_stratum_inside_http_post_body_of_a_kept_alive_stream() -> None:
    body = json.dumps(SUBSCRIBE).encode()
    first = b"GET / HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n"
    post = (b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Type: "
            b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    for step in (1, 5, 10_000):
        found = feed_all(Inspector(http=True), first + post, step)
        assert found is not None and found.app == "stratum"


def test_stratum_inside_a_masked_websocket() -> None:
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: allowed.lab.test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n")
    hello = ws_frame(b'{"op":"hello"}')
    miner = ws_frame(json.dumps(SUBSCRIBE).encode())
    # masked, the method name is not in the bytes at all
    assert b"mining" not in miner and scan(miner) is None
    for step in (1, 3, 4096):
        found = feed_all(Inspector(http=True), upgrade + hello + miner, step)
        assert found is not None and found.app == "stratum", step


def test_honest_websocket_chat_passes() -> None:
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: allowed.lab.test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n\r\n")
    frames = b"".join(ws_frame(json.dumps({"method": "chat.send", "text": f"hi {i}"}).encode())
                      for i in range(50))
    assert feed_all(Inspector(http=True), upgrade + frames, 13) is None


def test_ssh_and_connect_anywhere() -> None:
    found = feed_all(Inspector(), b"\r\n  \nSSH-2.0-OpenSSH_9.2p1 Debian\r\n", 2)
    assert found is not None and found.app == "ssh"
    assert found.fields["net.ssh_banner"].startswith("SSH-2.0-")
    found = feed_all(Inspector(), b"hello\nCONNECT pool.lab.test:3333 HTTP/1.1\r\n\r\n", 3)
    assert found is not None and found.rule == "gateway.proxy_protocol"
    req = (b"GET / HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n"
           b"CONNECT 203.0.113.33:3333 HTTP/1.1\r\nHost: x\r\n\r\n")
    found = feed_all(Inspector(http=True), req, 1)
    assert found is not None and found.app == "http-connect"


def test_kept_alive_requests_are_judged_one_by_one() -> None:
    seen: list[str | None] = []

    def judge(sniff: Sniff) -> Finding | None:
        seen.append(sniff.host)
        if sniff.host != "allowed.lab.test":
            return Finding("http", "gateway.default_deny", f"{sniff.host} not allowed")
        return None

    one = b"GET /a HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Length: 3\r\n\r\nabc"
    two = b"GET /b HTTP/1.1\r\nHost: allowed.lab.test\r\nTransfer-Encoding: chunked\r\n\r\n" \
          b"3\r\nxyz\r\n0\r\n\r\n"
    three = b"GET http://denied.lab.test/ HTTP/1.1\r\nHost: denied.lab.test\r\n\r\n"
    inspector = Inspector(http=True, judge=judge)
    assert feed_all(inspector, one + two, 2) is None
    found = feed_all(inspector, three, 2)
    assert found is not None and found.rule == "gateway.default_deny"
    assert seen == ["allowed.lab.test", "denied.lab.test"]  # the first was decided at connect
    assert inspector.requests == 3


@pytest.mark.parametrize("data", [
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"rootUri":null}}\n',
    b'{"method":"login","params":{"user":"alice","password_hash":"x"}}\n',
    (b"POST /simple/ HTTP/1.1\r\nHost: pypi.org\r\nContent-Length: 20\r\n\r\n"
     b'{"method": "submit"}'),
    b"GET /ssh-keys/SSH-2.0.txt HTTP/1.1\r\nHost: allowed.lab.test\r\n\r\n",
    b"connect to the database and run the query\n",
])
def test_honest_bytes_pass(data: bytes) -> None:
    http = data.startswith((b"GET", b"POST"))
    for step in (1, 4096):
        assert feed_all(Inspector(http=http), data, step) is None, data


def test_random_bytes_never_raise_and_rarely_match() -> None:
    rng = os.urandom(1 << 20)
    inspector = Inspector()
    assert feed_all(inspector, rng, 65536) is None
    http = Inspector(http=True)
    for i in range(0, 4096, 17):
        http.feed(rng[i:i + 17])  # garbage: a malformed finding or None, never an exception


def test_a_silent_start_is_classified_when_it_speaks() -> None:
    found = Inspector(classify_first=True).feed(b"\x05\x01\x00")
    assert found is not None and found.rule == "gateway.proxy_protocol"
    found = feed_all(Inspector(classify_first=True),
                     b"CONNECT 203.0.113.33:3333 HTTP/1.1\r\n\r\n", 4)
    assert found is not None and found.app == "http-connect"
    assert feed_all(Inspector(classify_first=True), b"\x00\x01binary protocol", 3) is None


def _chunked(body: bytes, size: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def test_stratum_in_a_chunked_or_compressed_body() -> None:
    import gzip
    import zlib

    body = json.dumps(SUBSCRIBE).encode() + b"\n"
    chunked = (b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n" + _chunked(body, 5))
    packed = gzip.compress(body)
    gzipped = (b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Encoding: gzip\r\n"
               b"Content-Length: %d\r\n\r\n" % len(packed)) + packed
    both = (b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Encoding: deflate\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(zlib.compress(body), 7))
    for data in (chunked, gzipped, both):
        for step in (1, 3, 4096):
            found = feed_all(Inspector(http=True), data, step)
            assert found is not None and found.app == "stratum", (data[:60], step)


def test_honest_compressed_upload_passes() -> None:
    import gzip

    packed = gzip.compress(b'{"files": ["a.py", "b.py"], "message": "fix tests"}' * 200)
    data = (b"POST /upload HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(packed, 100))
    assert feed_all(Inspector(http=True), data, 64) is None


def test_stratum_in_a_base64_body() -> None:
    import base64
    import gzip

    body = (json.dumps(SUBSCRIBE).encode() + b"\n"
            + json.dumps({"id": 2, "method": "mining.authorize",
                          "params": ["44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DB", "x"]}).encode())
    plain = base64.b64encode(body)
    urlsafe = base64.urlsafe_b64encode(b"\x00\xff" + body)  # '-' / '_' in the text
    wrapped = base64.encodebytes(body)  # MIME style, a newline every 76 characters
    cases = [
        b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Length: %d\r\n\r\n%s"
        % (len(plain), plain),
        b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Length: %d\r\n\r\n%s"
        % (len(urlsafe), urlsafe),
        b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Length: %d\r\n\r\n%s"
        % (len(wrapped), wrapped),
        b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunked(plain, 5),
    ]
    packed = gzip.compress(plain)
    cases.append(b"POST /rpc HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Encoding: gzip\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(packed) + packed)
    for data in cases:
        for step in (1, 3, 4096):
            found = feed_all(Inspector(http=True), data, step)
            assert found is not None and found.app == "stratum", (data[:70], step)
    # byte by byte, the miner message is refused before the body has all gone out
    inspector = Inspector(http=True)
    stop = next(i for i in range(len(cases[0])) if inspector.feed(cases[0][i:i + 1]))
    assert stop < len(cases[0]) - 1


def test_honest_base64_bodies_pass() -> None:
    import base64

    blob = base64.b64encode(os.urandom(3000) + b'{"id": 1, "method": "tools/list"}')
    text = b"this is a plain form body with spaces, not base64 at all = ok"
    for body in (blob, text, base64.b64encode(b'{"method": "mine.sweeper.start"}')):
        data = (b"POST /up HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Length: %d\r\n\r\n"
                % len(body)) + body
        for step in (1, 4096):
            assert feed_all(Inspector(http=True), data, step) is None, (body[:40], step)


ACROSS_A_READ = {
    "ssh": (b"\nSSH-2.0-OpenSSH_9.6\r\n", "ssh"),
    "stratum": (json.dumps(SUBSCRIBE).encode() + b"\n", "stratum"),
    "escaped": (b'{"id":1,"method":"mining\\u002esubscribe","params":[]}\n', "stratum"),
    "connect": (b"\nCONNECT 203.0.113.33:3333 HTTP/1.1\r\n\r\n", "http-connect"),
}


@pytest.mark.parametrize("name", sorted(ACROSS_A_READ))
@pytest.mark.parametrize("http", [False, True])
def test_found_wherever_a_large_read_splits_it(name: str, http: bool) -> None:
    """The relay reads up to 256 KiB at a time and scans only chunks with a trigger in
    them, their seam or the previous tail: a message cut anywhere by a read boundary
    (inside its trigger, right after it, or with the trigger whole in the first read
    and the rest in the next) is still found, in a raw stream and an HTTP body."""
    message, app = ACROSS_A_READ[name]
    pad = b"\xfe" * 70_000
    for cut in range(1, len(message)):
        stream = pad + message + pad
        boundary = len(pad) + cut
        inspector = Inspector(http=http)
        if http:
            head = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(stream)
            assert inspector.feed(head) is None
        first, second = stream[:boundary], stream[boundary:]
        found = inspector.feed(first) or inspector.feed(second)
        assert found is not None and found.app == app, (name, cut)


def test_binary_uploads_pass_in_large_reads() -> None:
    """Bulk binary in 256 KiB reads: no finding, and the tail flag does not stick."""
    rng = os.urandom(4 << 20)
    for http in (False, True):
        inspector = Inspector(http=http)
        if http:
            inspector.feed(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                           % len(rng))
        assert feed_all(inspector, rng, 256 * 1024) is None


@pytest.mark.parametrize("name", sorted(ACROSS_A_READ))
def test_found_across_the_prefilters_slices_within_one_read(name: str) -> None:
    """The trigger prefilter searches a read in 16 KiB slices: a message whose trigger
    straddles a slice boundary inside one read is still found."""
    message, app = ACROSS_A_READ[name]
    for start in range(16 * 1024 - 12, 16 * 1024 + 2):
        data = b"\xfe" * start + message + b"\xfe" * 40_000
        found = Inspector().feed(data)
        assert found is not None and found.app == app, (name, start)


def test_trigger_dense_streams_are_still_judged() -> None:
    """A read packed with triggers (the prefilter's worst case) is scanned in full:
    honest-looking repetition passes, a banner at its end is found."""
    assert Inspector().feed(b"connect " * 32768) is None
    found = Inspector().feed(b"SSH-" * 65536 + b"\nSSH-2.0-OpenSSH_9.6\r\n")
    assert found is not None and found.app == "ssh"


def test_stratum_deep_in_a_large_chunked_or_compressed_upload() -> None:
    """Bodies that are rebuilt (de-chunked, inflated) are scanned in large pieces, which
    go through the SIMD prefilter first: a miner message after ~300 kB of honest
    binary, in 256 KiB reads, is still found."""
    import gzip

    message = json.dumps(SUBSCRIBE).encode() + b"\n"
    noise = os.urandom(300_000)
    # 119_975: a 40 kB chunk boundary cuts "mining.subscribe" (only the rebuilt body has it)
    for split in (0, 100_001, 119_975, len(noise)):
        body = noise[:split] + message + noise[split:]
        chunked = (b"POST /u HTTP/1.1\r\nHost: allowed.lab.test\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body, 40_000))
        packed = gzip.compress(body, 1)
        gzipped = (b"POST /u HTTP/1.1\r\nHost: allowed.lab.test\r\nContent-Encoding: gzip\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(packed)) + packed
        for data in (chunked, gzipped):
            found = feed_all(Inspector(http=True), data, 256 * 1024)
            assert found is not None and found.app == "stratum", (split, data[:60])
    honest = (b"POST /u HTTP/1.1\r\nHost: allowed.lab.test\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(noise, 40_000))
    assert feed_all(Inspector(http=True), honest, 256 * 1024) is None
