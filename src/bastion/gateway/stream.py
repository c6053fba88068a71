"""Whole-stream inspection of a relayed connection, sans I/O.

The first-bytes classifier (``sniff.classify``) names a connection so the gateway can
decide it; an agent that wants through only has to make those first bytes look
harmless (a space, a JSON-RPC ``ping``, an HTTP POST, a kept-alive second request).
So every chunk of a non-TLS connection is fed to an ``Inspector`` *before* it is
forwarded, for the connection's whole life, and the first chunk that carries a
forbidden protocol is never sent: the relay cuts the connection instead.

What is looked for, anywhere in the stream:

* miner JSON-RPC (Stratum, xmrig/ethminer ``login``/``submit``/``eth_*``): the
  ``"method"`` key is found wherever it sits in the object, its value in any letter
  case, with any whitespace, after ``\\uXXXX`` escapes are undone, inside HTTP bodies
  and inside (unmasked) websocket frames;
* an SSH version exchange (``SSH-2.0-`` at the start of a line);
* proxy handshakes: ``CONNECT host:port HTTP/1.x`` request lines;
* in an HTTP stream, every request of a kept-alive connection, one by one: its head is
  classified like a first request and judged by the caller (``judge``), so a second
  request for another Host, or an absolute-form proxy request, is refused on its own.

Everything here is a pure function of the bytes fed so far; malformed input never
raises. Chunks are scanned with a short overlap so a keyword split across two reads is
still seen.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import ahocorasick_rs

from .sniff import Sniff, classify

__all__ = ["Finding", "Inspector", "scan"]

_OVERLAP = 512  # bytes of the previous chunk scanned again with the next one
_MAX_HEAD = 64 * 1024  # an HTTP request head larger than this is refused

# strong: only miners say these; weak: generic names that xmrig-style pools use, which
# count only beside a miner-shaped parameter in the same message
_STRONG = (rb"mining\.[a-z_.]{3,40}|eth_submitlogin|eth_getwork|eth_submitwork|"
           rb"eth_submithashrate|mining_subscribe")
_WEAK = rb"login|submit|getjob|keepalived"
_METHOD = re.compile(rb'"method"\s*:\s*"(' + _STRONG + rb"|" + _WEAK + rb')"')
_WEAK_SET = {b"login", b"submit", b"getjob", b"keepalived"}
_MINER_PARAM = re.compile(rb'"(agent|job_id|nonce|rigid|pass|worker|blob)"\s*:')
_ESCAPE = re.compile(rb"\\u00([0-7][0-9a-f])")
_SSH = re.compile(rb"(?:^|[\r\n])SSH-[12]\.[0-9]{1,2}-[\x21-\x7e]{1,200}")
_NEVER_FIRST = {"socks4": ("gateway.proxy_protocol", "a SOCKS4 handshake"),
                "socks5": ("gateway.proxy_protocol", "a SOCKS5 handshake"),
                "http-connect": ("gateway.proxy_protocol", "a CONNECT request"),
                "stratum": ("gateway.miner_protocol", "a miner's JSON-RPC")}
_CONNECT = re.compile(rb"(?:^|\n)\s*connect\s+\[?[a-z0-9_.:-]{1,255}\]?:[0-9]{1,5}\s+http/",
                      re.IGNORECASE)

# The bytes ``scan`` looks for first (each protocol cannot do without one), as one
# prefilter for the relay: a leftmost-first automaton of this few patterns runs as a
# SIMD (Teddy) search at several GB/s, where the five ``in`` tests cost ~0.2 GB/s
# together on fresh (uncached) reads, the upload path's whole cost. It is asked
# slice by slice, so trigger-dense input (an agent's stream of "SSH-SSH-...") builds
# a short match list before falling back to ``scan``, never one per trigger.
_TRIGGERS = ahocorasick_rs.BytesAhoCorasick(
    [b"\\u00", b'"method"', b"SSH-", b"CONNECT", b"connect"],
    matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_FIRST)
_SEAM = 7  # the longest trigger less one: bytes each side of a read boundary
_SLICE = 16 * 1024


def _has_trigger(data: bytes) -> bool:
    """Whether any of ``scan``'s triggers occurs in ``data`` (slices overlap by
    ``_SEAM`` bytes, so one that straddles two slices is seen)."""
    view = memoryview(data)
    try:
        for start in range(0, len(data), _SLICE):
            if _TRIGGERS.find_matches_as_indexes(view[start:start + _SLICE + _SEAM]):
                return True
        return False
    finally:
        view.release()


@dataclass(frozen=True)
class Finding:
    """A forbidden protocol seen mid-stream: the connection must be cut."""

    app: str  # stratum, ssh, http-connect, http (a refused kept-alive request)
    rule: str  # gateway.miner_protocol, gateway.proxy_protocol, ...
    reason: str
    fields: dict[str, str] = field(default_factory=dict)


def scan(data: bytes) -> Finding | None:
    """The protocol checks that hold for any bytes, wherever they appear.

    Fast path first: a few ``in`` tests on the raw bytes for what each protocol cannot
    do without — JSON-RPC's ``"method"`` key (or a ``\\u00`` escape that could spell
    it), SSH's ``SSH-``, a ``CONNECT`` request line — and only a chunk that has one is
    lowered and matched (the relay asks ``_has_trigger`` before calling this on bulk
    reads). JSON keys, SSH version strings and HTTP methods are case-sensitive to the
    servers that read them; the *values* (``Mining.Subscribe``) are matched in any
    case. A large input is first put to the SIMD prefilter (a de-chunked or inflated
    upload body comes through here, not through ``Inspector._scan``)."""
    if len(data) > _SLICE and not _has_trigger(data):
        return None
    escaped = b"\\u00" in data
    if escaped or b'"method"' in data:
        lowered = data.lower()
        if escaped:
            lowered = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), lowered)
        for match in _METHOD.finditer(lowered):
            method = match.group(1)
            if method in _WEAK_SET:
                near = lowered[max(0, match.start() - 400):match.end() + 400]
                if not _MINER_PARAM.search(near):
                    continue
            return Finding("stratum", "gateway.miner_protocol",
                           f"miner JSON-RPC method {method.decode()!r} in the stream",
                           {"net.stratum_method": method.decode()[:64]})
    if b"SSH-" in data:
        ssh = _SSH.search(data)
        if ssh:
            banner = ssh.group(0).strip().decode("ascii", "replace")
            return Finding("ssh", "gateway.ssh_in_stream",
                           "an SSH version exchange inside another protocol",
                           {"net.ssh_banner": banner[:255]})
    if b"CONNECT" in data or b"connect" in data:
        connect = _CONNECT.search(data)
        if connect:
            return Finding("http-connect", "gateway.proxy_protocol",
                           "a CONNECT proxy request in the stream",
                           {"net.path": connect.group(0).strip().decode("latin-1")[:255]})
    return None


class Inspector:
    """One direction of one connection. ``feed(chunk)`` returns a ``Finding`` as soon as
    the stream so far shows a forbidden protocol (the chunk must then not be
    forwarded), else None.

    ``http=True`` tracks HTTP/1.x request framing (Content-Length, chunked bodies,
    websocket upgrades) and passes each request head to ``judge``, which returns a
    refusal reason (a Finding) or None: every request after the first (the gateway
    judged that one at connect), the first as well with ``judge_first``.
    """

    def __init__(self, *, http: bool = False,
                 judge: Callable[[Sniff], Finding | None] | None = None,
                 classify_first: bool = False, first_is_request: bool = False,
                 judge_first: bool = False) -> None:
        self._http = http
        # the first request is judged too (TLS inspection: nothing judged it at connect)
        self._judge_first = judge_first
        # the first head was classified as a plain HTTP request before this connection
        # was allowed (the gateway's peek): not parsed a second time
        self._known_first = http and first_is_request
        self._judge = judge
        # a connection allowed before it said anything: its first bytes are classified
        # here, and a proxy handshake or miner among them refused like at connect time
        self._first: bytes | None = b"" if classify_first else None
        self._tail = b""
        self._tail_hot = False  # whether the tail holds a trigger (see ``_scan``)
        self._state = "head" if http else "raw"
        self._head = b""
        self._body_left = 0  # bytes of the current Content-Length body still to come
        self._chunk = b""  # partial chunked-encoding size line
        self._ws = b""  # partial websocket frame header
        self._ws_left = 0
        self._ws_mask = b""
        self._ws_pos = 0
        self._ws_text = b""  # unmasked payload awaiting a scan
        # a body whose bytes on the wire are not its content (chunked framing, gzip or
        # deflate): its payload is rebuilt and scanned as well
        self._decode = False
        self._inflate: zlib._Decompress | None = None
        self._payload: list[bytes] = []
        self._plain = b""
        # a text body that is base64 (standard or URL-safe): decoded and scanned too, so
        # a miner message cannot pass by being re-spelled in base64
        self._b64: bytes | None = b""
        self._b64_plain = b""
        self.requests = 0

    def feed(self, data: bytes | memoryview) -> Finding | None:
        """The next bytes of the stream (a memoryview of a buffer the caller reuses is
        fine: nothing of it is kept past this call)."""
        if not data:
            return None
        if self._first is not None:
            self._first += data
            sniff = classify(self._first, final=len(self._first) >= 512)
            if sniff is not None:
                self._first = None
                if sniff.app in _NEVER_FIRST:
                    rule, what = _NEVER_FIRST[sniff.app]
                    return Finding(sniff.app, rule, f"{what} after a silent start",
                                   {"net.host": sniff.host or ""} if sniff.host else {})
        if self._state == "ws" or (self._http and self._state != "raw"):
            return self._framed(data)
        return self._scan(data)

    def _scan(self, data: bytes) -> Finding | None:
        """``scan`` of the previous chunk's tail plus this chunk, without building that
        window unless a trigger is in it: the tail (flag kept from the last call), the
        seam (a trigger split across the two reads) or the chunk itself. The same
        answer as ``scan(tail + data)``, at the cost of one pass over ``data`` for the
        common chunk that has no trigger at all."""
        tail = self._tail
        hot = (self._tail_hot or _has_trigger(tail[-_SEAM:] + data[:_SEAM])
               or _has_trigger(data))
        if len(data) >= _OVERLAP:
            self._tail = bytes(data[-_OVERLAP:])  # data may be a view of a reused buffer
        else:
            self._tail = (tail + data)[-_OVERLAP:]
        self._tail_hot = hot and _has_trigger(self._tail)
        return scan(tail + data) if hot else None

    # -- HTTP -------------------------------------------------------------------------

    def _framed(self, data: bytes) -> Finding | None:
        if self._state != "ws":
            found = self._scan(data)  # bodies and heads alike
            if found:
                return found
        pos = 0
        while pos < len(data):
            if self._state == "head":
                before = len(self._head)
                self._head += data[pos:]
                end = self._head.find(b"\r\n\r\n")
                size = 4
                if end < 0:
                    end, size = self._head.find(b"\n\n"), 2
                if end < 0:
                    if len(self._head) > _MAX_HEAD:
                        return Finding("http", "gateway.malformed", "HTTP request head too large")
                    return None
                head = self._head[:end + size]
                self._head = b""
                pos += len(head) - before
                found = self._request(head)
                if found:
                    return found
            elif self._state == "body":
                take = min(self._body_left, len(data) - pos)
                if self._decode or self._b64 is not None:  # else nothing reads it again
                    self._payload.append(data[pos:pos + take])
                self._body_left -= take
                pos += take
                if self._body_left == 0:
                    self._state = "head"
                found = self._decoded()
                if found:
                    return found
            elif self._state == "chunked":
                pos = self._chunked(data, pos)
                if pos < 0:
                    return Finding("http", "gateway.malformed", "bad chunked encoding")
                found = self._decoded()
                if found:
                    return found
            elif self._state == "ws":
                return self._frames(data[pos:])
            else:  # raw: after an upgrade we cannot frame (h2c and friends): scanned
                return None  # above, as every later chunk will be
        return None

    def _request(self, head: bytes) -> Finding | None:
        self.requests += 1
        if self.requests == 1 and self._known_first:
            sniff: Sniff | None = Sniff("http")
        else:
            sniff = classify(head, final=True)
        if sniff is None or sniff.app not in ("http", "http-connect"):
            return Finding("http", "gateway.malformed",
                           "the stream stopped being HTTP/1.x requests")
        if sniff.app == "http-connect":
            return Finding("http-connect", "gateway.proxy_protocol",
                           f"CONNECT {sniff.host}:{sniff.port} inside an HTTP connection",
                           {"net.host": sniff.host or "", "net.method": "CONNECT"})
        if self._judge is not None and (self.requests > 1 or self._judge_first):
            found = self._judge(sniff)
            if found:
                return found
        headers = _headers(head)
        if b"websocket" in headers.get(b"upgrade", b"").lower():
            self._state = "ws"
            return None
        if headers.get(b"upgrade"):
            self._state = "raw"
            return None
        encoding = headers.get(b"content-encoding", b"").strip().lower()
        self._inflate = (zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in (b"gzip", b"x-gzip")
                         else zlib.decompressobj() if encoding == b"deflate" else None)
        self._plain = b""
        self._b64, self._b64_plain = b"", b""
        self._payload = []
        self._decode = self._inflate is not None or b"chunked" in headers.get(
            b"transfer-encoding", b"").lower()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._state = "chunked"
            self._chunk = b""
            self._body_left = 0
            return None
        try:
            length = int(headers.get(b"content-length", b"0").strip() or b"0")
        except ValueError:
            return Finding("http", "gateway.malformed", "bad Content-Length")
        if length < 0:
            return Finding("http", "gateway.malformed", "bad Content-Length")
        self._body_left = length
        self._state = "body" if length else "head"
        return None

    def _chunked(self, data: bytes, pos: int) -> int:
        """Advance through chunked framing; -1 on a framing error."""
        while pos < len(data):
            if self._body_left > 0:
                take = min(self._body_left, len(data) - pos)
                self._payload.append(data[pos:pos + take])
                self._body_left -= take
                pos += take
                continue
            self._chunk += data[pos:pos + 1]
            pos += 1
            if not self._chunk.endswith(b"\n"):
                if len(self._chunk) > 4096:
                    return -1
                continue
            line = self._chunk.strip()
            self._chunk = b""
            if self._body_left == -2:  # trailers until an empty line
                if line == b"":
                    self._body_left = 0
                    self._state = "head"
                    return pos
                continue
            if line == b"":
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                return -1
            if size == 0:
                self._body_left = -2
            else:
                self._body_left = size
                # after the data: CRLF, handled by the empty-line skip above
        return pos

    def _decoded(self) -> Finding | None:
        """Scan the body's content as the server will see it: de-chunked, inflated
        (at most 1 MiB of output per fed chunk: a compression bomb is not followed)."""
        if not self._payload:
            return None
        payload = b"".join(self._payload)
        self._payload = []
        if self._inflate is not None:
            try:
                payload = self._inflate.decompress(payload, 1 << 20)
            except zlib.error:
                self._inflate = None
                return Finding("http", "gateway.malformed",
                               "a compressed request body that does not decompress")
        if self._decode:
            self._plain = self._plain[-_OVERLAP:] + payload
            found = scan(self._plain)
            if found:
                return found
        return self._base64(payload)

    def _base64(self, payload: bytes) -> Finding | None:
        """Decode the body as base64 while it still looks like base64 (any other byte
        ends this for the request) and scan the decoded bytes with the same scan."""
        if self._b64 is None:
            return None
        text = payload.translate(None, b" \t\r\n")
        if text.translate(None, _B64_ALPHABET):
            self._b64 = None
            return None
        text = (self._b64 + text).translate(_URLSAFE)
        whole = len(text) - len(text) % 4
        self._b64 = text[whole:]
        if not whole:
            return None
        try:
            decoded = base64.b64decode(text[:whole], validate=True)
        except binascii.Error:
            self._b64 = None
            return None
        self._b64_plain = self._b64_plain[-_OVERLAP:] + decoded
        return scan(self._b64_plain)

    # -- websocket (client frames are masked: unmask before scanning) -----------------

    def _frames(self, data: bytes) -> Finding | None:
        pos = 0
        while pos < len(data):
            if self._ws_left == 0:
                self._ws += data[pos:pos + 1]
                pos += 1
                header = _ws_header(self._ws)
                if header is None:
                    continue
                _size, length, mask = header
                self._ws = b""
                self._ws_left, self._ws_mask, self._ws_pos = length, mask, 0
                continue
            take = min(self._ws_left, len(data) - pos)
            payload = data[pos:pos + take]
            if self._ws_mask:
                payload = _unmask(payload, self._ws_mask, self._ws_pos)
            self._ws_pos += take
            self._ws_left -= take
            pos += take
            self._ws_text = (self._ws_text + payload)[-(_OVERLAP * 8):]
            found = scan(self._ws_text)
            if found:
                return found
        return None


_B64_ALPHABET = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=")
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _ws_header(buf: bytes) -> tuple[int, int, bytes] | None:
    """(header size, payload length, mask key) of a websocket frame header, or None
    while incomplete."""
    if len(buf) < 2:
        return None
    masked = buf[1] & 0x80
    length = buf[1] & 0x7F
    size = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[2:4], "big")
        size = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length = int.from_bytes(buf[2:10], "big")
        size = 10
    if masked:
        if len(buf) < size + 4:
            return None
        return size + 4, length, bytes(buf[size:size + 4])
    return size, length, b""


def _unmask(payload: bytes, key: bytes, offset: int) -> bytes:
    rotated = key[offset % 4:] + key[:offset % 4]
    n = len(payload)
    mask = (rotated * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def _headers(head: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in head.replace(b"\r\n", b"\n").split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out
