"""The lab's own servers, run as one process inside the lab namespace.

``python -m bastion.lab.servers ROOT`` serves, on the addresses of ``topology``:

* a Stratum mining pool (3333 and 443 in clear, 3334 in TLS) that appends every byte it
  receives to ``ROOT/pool.bytes`` and answers enough of the protocol to keep a miner
  talking — so "the pool received zero bytes" is a measurement, not an assumption;
* HTTP (80) and HTTPS (443, test CA) for the allowed and denied web hosts, logging each
  request to ``ROOT/web.log``;
* the authoritative DNS for ``*.lab.test`` on 198.51.100.53, logging to ``ROOT/dns.log``.

The OpenSSH server is the real ``sshd``, started separately (``bastion.lab.sshd``).
"""

from __future__ import annotations

import asyncio
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


async def _pool(recorder: _Recorder, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    recorder.pool_log.write(f"connection from {peer}\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            recorder.pool.write(line)
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
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
                elif line.lower().replace(" ", "") == "connection:close":
                    close = True
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
