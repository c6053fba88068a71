"""Sans-I/O classification of a connection from the client's first bytes.

The gateway must name a connection *before* it opens anything upstream, so this module
takes the bytes a client has sent so far and answers either "need more" (None) or a
``Sniff``: the application protocol and the facts a decision or a rule needs (TLS SNI and
ALPN, HTTP method/Host/path, SSH banner, miner JSON-RPC method, proxy handshakes).

No sockets here: every function is a pure function of bytes, tested byte by byte, and
malformed input yields ``app="unknown"`` with an ``error`` rather than an exception, so
hostile clients cannot crash the gateway through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["MAX_PEEK", "Sniff", "classify"]

MAX_PEEK = 16 * 1024  # bytes read before giving up and calling it "unknown"

_HTTP_METHODS = (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH",
                 b"TRACE", b"CONNECT", b"PROPFIND", b"MKCOL", b"COPY", b"MOVE")
_MINER_METHODS = ("mining.subscribe", "mining.authorize", "mining.submit",
                  "mining.extranonce.subscribe", "mining.configure", "mining.notify",
                  "mining.set_difficulty", "eth_submitLogin", "eth_getWork",
                  "eth_submitWork", "login", "submit", "getjob", "keepalived")


@dataclass(frozen=True)
class Sniff:
    """What the first bytes of a connection say it is."""

    app: str  # tls, http, http-connect, ssh, stratum, json-rpc, socks4, socks5, unknown
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    host: str | None = None  # HTTP Host / CONNECT authority host / SOCKS target host
    port: int | None = None  # port named in a CONNECT / SOCKS request
    method: str | None = None
    path: str | None = None
    ssh_banner: str | None = None
    stratum_method: str | None = None
    error: str | None = None  # why the bytes did not parse as what they started like
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        """The server name the client asked for (SNI for TLS, Host for HTTP)."""
        return self.sni if self.app == "tls" else self.host if self.app == "http" else None


def classify(data: bytes, *, final: bool = False) -> Sniff | None:
    """Classify ``data`` (everything the client sent so far).

    Returns None while more bytes could change the answer; ``final=True`` (peek timeout,
    client half-closed, or ``MAX_PEEK`` reached) forces an answer.
    """
    if len(data) >= MAX_PEEK:
        final = True
    if not data:
        return Sniff("unknown", error="no data") if final else None
    first = data[0]
    if first == 0x16:
        return _tls(data, final)
    if first == 0x04:
        return _socks4(data, final)
    if first == 0x05:
        return _socks5(data, final)
    if data.startswith(b"SSH-") or (len(data) < 4 and b"SSH-".startswith(data)):
        return _ssh(data, final)
    if first in b"{[":
        return _jsonrpc(data, final)
    if first in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        return _http(data, final)
    return Sniff("unknown")


# -- TLS ------------------------------------------------------------------------------


def _tls(data: bytes, final: bool) -> Sniff | None:
    """Reassemble the ClientHello from handshake records, then read SNI and ALPN."""
    handshake = bytearray()
    pos = 0
    need: int | None = None
    while True:
        if len(data) < pos + 5:
            return _incomplete("tls", final)
        ctype, major = data[pos], data[pos + 1]
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        if ctype != 0x16 or major != 3 or length == 0 or length > 18432:
            return Sniff("unknown", error="tls: bad record header")
        if len(data) < pos + 5 + length:
            handshake += data[pos + 5:]
            return _incomplete("tls", final)
        handshake += data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if need is None and len(handshake) >= 4:
            if handshake[0] != 0x01:
                return Sniff("unknown", error="tls: first handshake is not a ClientHello")
            need = 4 + int.from_bytes(handshake[1:4], "big")
            if need > MAX_PEEK:
                return Sniff("unknown", error="tls: ClientHello too large")
        if need is not None and len(handshake) >= need:
            return _client_hello(bytes(handshake[4:need]))


def _client_hello(body: bytes) -> Sniff:
    r = _Reader(body)
    try:
        r.take(2 + 32)  # legacy version, random
        r.take(r.u8())  # session id
        r.take(r.u16())  # cipher suites
        r.take(r.u8())  # compression methods
        if r.left() == 0:
            return Sniff("tls")
        ext = _Reader(r.take(r.u16()))
        sni: str | None = None
        alpn: list[str] = []
        while ext.left():
            etype = ext.u16()
            edata = _Reader(ext.take(ext.u16()))
            if etype == 0 and edata.left():  # server_name
                names = _Reader(edata.take(edata.u16()))
                while names.left():
                    kind = names.u8()
                    value = names.take(names.u16())
                    if kind == 0 and sni is None:
                        sni = _hostname(value)
                        if sni is None:
                            return Sniff("tls", error="tls: server name is not a hostname")
            elif etype == 16 and edata.left():  # ALPN
                protos = _Reader(edata.take(edata.u16()))
                while protos.left():
                    alpn.append(protos.take(protos.u8()).decode("ascii", "replace"))
        return Sniff("tls", sni=sni, alpn=tuple(alpn))
    except _Short:
        return Sniff("tls", error="tls: truncated ClientHello")


# -- HTTP -----------------------------------------------------------------------------


def _http(data: bytes, final: bool) -> Sniff | None:
    space = data.find(b" ", 0, 16)
    if space < 0:
        if len(data) < 16 and not final and any(m.startswith(data) for m in _HTTP_METHODS):
            return None
        return Sniff("unknown")
    method = data[:space]
    if method not in _HTTP_METHODS:
        return Sniff("unknown")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    if end < 0:
        if not final:
            return None
        return Sniff("http", method=method.decode(), error="http: incomplete request head")
    lines = data[:end].replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return Sniff("http", method=method.decode(), error="http: bad request line")
    target = parts[1].decode("latin-1")
    host: str | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return Sniff("http", method=method.decode(), error="http: bad header line")
        if name.strip().lower() == b"host":
            if host is not None:
                return Sniff("http", method=method.decode(), error="http: two Host headers")
            host = value.strip().decode("latin-1")
    if method == b"CONNECT":
        name, port = _split_authority(target)
        return Sniff("http-connect", method="CONNECT", host=name, port=port, path=target)
    if target.startswith(("http://", "https://")):  # absolute form: a proxy request
        authority = target.split("://", 1)[1].split("/", 1)[0]
        path = "/" + target.split("://", 1)[1].partition("/")[2]
        host = host or authority
        target = path
    if host is None:
        return Sniff("http", method=method.decode(), path=target, error="http: no Host header")
    name, port = _split_authority(host)
    if name is None:
        return Sniff("http", method=method.decode(), path=target, error="http: bad Host header")
    return Sniff("http", method=method.decode(), host=name, port=port, path=target)


def _split_authority(value: str) -> tuple[str | None, int | None]:
    host, port = value, None
    if value.startswith("["):
        return None, None  # IPv6 literals are never dialled
    if ":" in value:
        host, _, port_text = value.rpartition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None, None
        port = int(port_text)
    return _hostname(host.encode("latin-1", "replace")), port


# -- SSH, JSON-RPC, SOCKS ---------------------------------------------------------------


def _ssh(data: bytes, final: bool) -> Sniff | None:
    end = data.find(b"\n")
    if end < 0:
        if len(data) < 255 and not final:
            return None
        return Sniff("ssh", ssh_banner=data[:255].decode("ascii", "replace").strip(),
                     error="ssh: banner without end of line")
    return Sniff("ssh", ssh_banner=data[:end].rstrip(b"\r").decode("ascii", "replace"))


def _jsonrpc(data: bytes, final: bool) -> Sniff | None:
    end = data.find(b"\n")
    if end < 0:
        if not final:
            # a complete object without a newline may still be a whole request
            message = _json(data)
            if message is None:
                return None
        else:
            message = _json(data)
    else:
        message = _json(data[:end])
    if message is None:
        return Sniff("json-rpc", error="json: not a JSON object")
    items = message if isinstance(message, list) else [message]
    for item in items:
        if not isinstance(item, dict):
            continue
        method = item.get("method")
        if not isinstance(method, str):
            continue
        params = item.get("params")
        agent = isinstance(params, dict) and "agent" in params
        if method.startswith(("mining.", "eth_")) or (
            method in _MINER_METHODS and (method != "login" or agent or params is not None)
        ):
            return Sniff("stratum", stratum_method=method[:64])
        return Sniff("json-rpc", method=method[:64])
    return Sniff("json-rpc", error="json: no method")


def _json(data: bytes) -> object | None:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _socks4(data: bytes, final: bool) -> Sniff | None:
    if len(data) < 9:
        return _incomplete("socks4", final)
    cmd = data[1]
    port = int.from_bytes(data[2:4], "big")
    ip = ".".join(str(b) for b in data[4:8])
    if cmd not in (1, 2):
        return Sniff("unknown", error="socks4: bad command")
    user_end = data.find(b"\x00", 8)
    if user_end < 0:
        return _incomplete("socks4", final)
    host = ip
    if data[4:7] == b"\x00\x00\x00" and data[7] != 0:  # SOCKS4a: the name follows
        name_end = data.find(b"\x00", user_end + 1)
        if name_end < 0:
            return _incomplete("socks4", final)
        host = _hostname(data[user_end + 1:name_end]) or ""
    return Sniff("socks4", host=host or None, port=port)


def _socks5(data: bytes, final: bool) -> Sniff | None:
    if len(data) < 2:
        return _incomplete("socks5", final)
    count = data[1]
    if count == 0:
        return Sniff("unknown", error="socks5: no auth methods")
    if len(data) < 2 + count:
        return _incomplete("socks5", final)
    if any(m > 0x09 and m < 0x80 for m in data[2:2 + count]):
        return Sniff("unknown", error="socks5: bad auth method")
    return Sniff("socks5")


# -- helpers --------------------------------------------------------------------------


def _incomplete(app: str, final: bool) -> Sniff | None:
    return Sniff("unknown", error=f"{app}: truncated") if final else None


@lru_cache(maxsize=1024)
def _hostname(raw: bytes) -> str | None:
    """A DNS hostname in lower case, or None if ``raw`` is not one."""
    try:
        name = raw.decode("ascii").rstrip(".").lower()
    except UnicodeDecodeError:
        return None
    if not name or len(name) > 253:
        return None
    for label in name.split("."):
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            return None
        if not all(c.isalnum() or c in "-_" for c in label):
            return None
    return name


class _Short(Exception):
    """The buffer ended inside a field."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise _Short
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")
