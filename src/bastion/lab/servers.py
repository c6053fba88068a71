"""The lab's own servers, run as one process inside the lab namespace.

``python -m bastion.lab.servers ROOT`` serves, on the addresses of ``topology``:

* a Stratum mining pool (3333 and 443 in clear, 3334 in TLS) that appends every byte it
  receives to ``ROOT/pool.bytes`` and answers enough of the protocol to keep a miner
  talking — so "the pool received zero bytes" is a measurement, not an assumption;
* HTTP (80) and HTTPS (443, test CA) for the allowed and denied web hosts, logging each
  request to ``ROOT/web.log``;
* the authoritative DNS for ``*.lab.test`` on 198.51.100.53, logging to ``ROOT/dns.log``;
* the attacker's relay host under an allowed name (``relay.allowed.lab.test``): on 80/443
  a front that answers HTTP, acts as a CONNECT and absolute-form proxy, and as a
  Stratum pool; a SOCKS5 proxy on 1080; a pool on 3333; a TLS relay on 8443 to its
  sshd. It appends every byte it receives to ``ROOT/relay.bytes`` and every tunnel it
  opens to ``ROOT/relay.log``, so "nothing got through" is measured at the far end.

The OpenSSH server is the real ``sshd``, started separately (``bastion.lab.sshd``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import ssl
import sys
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from .topology import DNS_IP, host, lookup

__all__ = ["main"]


class _Recorder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = open(root / "pool.bytes", "ab", buffering=0)  # noqa: SIM115
        self.web = open(root / "web.log", "a", buffering=1)  # noqa: SIM115
        self.dns = open(root / "dns.log", "a", buffering=1)  # noqa: SIM115
        self.pool_log = open(root / "pool.log", "a", buffering=1)  # noqa: SIM115
        self.relay = open(root / "relay.bytes", "ab", buffering=0)  # noqa: SIM115
        self.relay_log = open(root / "relay.log", "a", buffering=1)  # noqa: SIM115


async def _pool(recorder: _Recorder, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter, record: object = None,
                first: bytes = b"") -> None:
    peer = writer.get_extra_info("peername")
    recorder.pool_log.write(f"connection from {peer}\n")
    sink = record if record is not None else recorder.pool
    try:
        while True:
            # a first line already read by the relay's front is answered on its own
            line = first or await reader.readline()
            first = b""
            if not line:
                break
            sink.write(line)  # type: ignore[attr-defined]
            try:
                request = json.loads(line)
                ident = request.get("id")
                method = request.get("method")
            except (ValueError, AttributeError):
                continue
            if method == "mining.subscribe":
                result: object = [[["mining.notify", "bst"]], "08000002", 4]
            elif method == "login":
                result = {"id": "bst", "job": {"blob": "00" * 76, "job_id": "1",
                                               "target": "ffffff00"}, "status": "OK"}
            else:
                result = True
            writer.write(json.dumps({"id": ident, "result": result, "error": None}).encode()
                         + b"\n")
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _web(recorder: _Recorder, name: str, reader: asyncio.StreamReader,
               writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = (lines[0].split(" ") + ["", ""])[:2]
            length = 0
            close = False
            key = None
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
                elif line.lower().replace(" ", "") == "connection:close":
                    close = True
                elif line.lower().startswith("sec-websocket-key:"):
                    key = line.split(":", 1)[1].strip()
            if key is not None:
                recorder.web.write(f"{name} {method} {path} websocket\n")
                await _websocket_echo(key, reader, writer)
                break
            body_in = await reader.readexactly(length) if length else b""
            recorder.web.write(f"{name} {method} {path} {len(body_in)}\n")
            if path.startswith("/bytes/"):
                body = b"x" * int(path.rsplit("/", 1)[1])
            else:
                body = f"hello from {name}\n".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError,
            asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _websocket_echo(key: str, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    """Accept a websocket and echo every text/binary frame back (unmasked, as servers
    send), answering pings; enough for a real client library."""
    accept = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
    await writer.drain()
    while True:
        head = await reader.readexactly(2)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        mask = await reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
        if opcode == 8:  # close
            writer.write(b"\x88\x00")
            await writer.drain()
            return
        reply_op = 10 if opcode == 9 else opcode  # ping -> pong
        size = len(data)
        frame = bytes([0x80 | reply_op])
        frame += bytes([size]) if size < 126 else bytes([126]) + size.to_bytes(2, "big")
        writer.write(frame + data)
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                record: object = None) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if record is not None:
                record.write(data)  # type: ignore[attr-defined]
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _tunnel(recorder: _Recorder, what: str, host_port: tuple[str, int],
                  reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  hello: bytes, first: bytes = b"") -> None:
    """Open the tunnel a proxy was asked for and pipe both ways (recording upstream)."""
    recorder.relay_log.write(f"{what} {host_port[0]}:{host_port[1]}\n")
    target = lookup(host_port[0]) or host_port[0]
    try:
        up_reader, up_writer = await asyncio.open_connection(target, host_port[1])
    except OSError as exc:
        recorder.relay_log.write(f"{what} failed: {exc}\n")
        writer.close()
        return
    if hello:
        writer.write(hello)
        await writer.drain()
    if first:
        recorder.relay.write(first)
        up_writer.write(first)
    await asyncio.gather(_pipe(reader, up_writer, recorder.relay), _pipe(up_reader, writer))


async def _relay_front(recorder: _Recorder, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
    """The attacker's all-in-one front on an allowed name: CONNECT proxy, absolute-form
    proxy, Stratum pool or plain web server, by what the client sends first."""
    try:
        first = await reader.readline()
        recorder.relay.write(first)
        text = first.decode("latin-1").strip()
        if text.upper().startswith("CONNECT "):
            target = text.split()[1]
            host_name, _, port = target.rpartition(":")
            while True:  # the request's header lines, up to the empty one
                line = await reader.readline()
                recorder.relay.write(line)
                if line in (b"\r\n", b"\n", b""):
                    break
            await _tunnel(recorder, "connect", (host_name, int(port)), reader, writer,
                          b"HTTP/1.1 200 Connection established\r\n\r\n")
            return
        parts = text.split()
        if len(parts) == 3 and parts[1].startswith("http://"):
            authority = parts[1][7:].split("/", 1)[0]
            host_name, _, port = authority.partition(":")
            path = "/" + parts[1][7:].partition("/")[2]
            await _tunnel(recorder, "forward", (host_name, int(port or 80)), reader, writer,
                          b"", f"{parts[0]} {path} {parts[2]}\r\n".encode())
            return
        if text.lstrip().startswith(("{", "[")) or not text:
            await _pool(recorder, reader, writer, recorder.relay, first)
            return
        rest = await reader.readuntil(b"\r\n\r\n")
        recorder.relay.write(rest)
        length = 0
        for line in rest.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = await reader.readexactly(length) if length else b""
        recorder.relay.write(body)
        while True:  # keep serving the stream: whatever comes is recorded
            reply = b"hello from relay.allowed.lab.test\n"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(reply)
                         + reply)
            await writer.drain()
            more = await reader.read(65536)
            if not more:
                break
            recorder.relay.write(more)
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, IndexError,
            asyncio.LimitOverrunError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _socks5(recorder: _Recorder, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        greeting = await reader.readexactly(2)
        methods = await reader.readexactly(greeting[1])
        recorder.relay.write(greeting + methods)
        writer.write(b"\x05\x00")
        await writer.drain()
        head = await reader.readexactly(4)
        if head[3] == 1:
            host_name = ".".join(str(b) for b in await reader.readexactly(4))
        else:
            host_name = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        await _tunnel(recorder, "socks", (host_name, port), reader, writer,
                      b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
    except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
        with contextlib.suppress(Exception):
            writer.close()


async def _tls_relay(recorder: _Recorder, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    """TLS in, clear to the relay host's own sshd: SSH wrapped in an allowed channel."""
    await _tunnel(recorder, "tls-relay", (host("relay").ip, 22), reader, writer, b"")


class _Dns(asyncio.DatagramProtocol):
    def __init__(self, recorder: _Recorder) -> None:
        self.recorder = recorder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage in, no answer out
            return
        reply = request.reply()
        for question in request.questions:
            name = str(question.qname).rstrip(".")
            address = lookup(name)
            if address is None:
                reply.header.rcode = RCODE.NXDOMAIN
            elif question.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=60))
            self.recorder.dns.write(f"{name} {QTYPE.get(question.qtype)} {address}\n")
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


async def _serve(root: Path) -> None:
    recorder = _Recorder(root)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(root / "server.pem", root / "server.key")
    pool_ip = host("pool").ip
    servers = [
        await asyncio.start_server(lambda r, w: _pool(recorder, r, w), pool_ip, 3333),
        await asyncio.start_server(lambda r, w: _pool(recorder, r, w), pool_ip, 443),
        await asyncio.start_server(lambda r, w: _pool(recorder, r, w), pool_ip, 3334, ssl=tls),
    ]
    for key in ("allowed", "denied"):
        web = host(key)

        def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                    name: str = web.names[0]) -> asyncio.Future[None]:
            return asyncio.ensure_future(_web(recorder, name, r, w))

        servers.append(await asyncio.start_server(handler, web.ip, 80))
        servers.append(await asyncio.start_server(handler, web.ip, 443, ssl=tls))
    relay_ip = host("relay").ip

    def front(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> asyncio.Future[None]:
        return asyncio.ensure_future(_relay_front(recorder, r, w))

    servers += [
        await asyncio.start_server(front, relay_ip, 80),
        await asyncio.start_server(front, relay_ip, 443, ssl=tls),
        await asyncio.start_server(lambda r, w: _socks5(recorder, r, w), relay_ip, 1080),
        await asyncio.start_server(lambda r, w: _pool(recorder, r, w, recorder.relay),
                                   relay_ip, 3333),
        await asyncio.start_server(lambda r, w: _tls_relay(recorder, r, w), relay_ip, 8443,
                                   ssl=tls),
    ]
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Dns(recorder), local_addr=(DNS_IP, 53))
    (root / "servers.ready").write_text("ready\n")
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    asyncio.run(_serve(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
