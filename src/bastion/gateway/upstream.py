"""Where allowed traffic goes: the host's network, or the simulated internet (lab).

An ``Upstream`` opens the gateway's outbound sockets in one network namespace (the
host's, or the lab's, which has no uplink at all) and resolves names through one DNS
server. The gateway dials *names* it resolved itself, never the address a sandbox
supplied for a TLS/HTTP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass, field

from dnslib import QTYPE, DNSRecord

from .netns import inside

__all__ = ["Upstream", "system_nameserver"]

_DNS_TIMEOUT = 2.0
_CONNECT_TIMEOUT = 5.0
_CACHE_TTL = 30.0
_SPARES = 8  # TCP sockets made ahead in a namespace, per entry into it


def system_nameserver() -> tuple[str, int]:
    """The first IPv4 nameserver of /etc/resolv.conf."""
    with contextlib.suppress(OSError), open("/etc/resolv.conf") as conf:
        for line in conf:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
                return parts[1], 53
    return "127.0.0.53", 53


@dataclass
class Upstream:
    """Outbound sockets in ``netns`` (None: the host's own) and DNS via ``dns``."""

    dns: tuple[str, int]
    netns: str | None = None
    label: str = "host"
    _cache: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    # unconnected TCP sockets made in ``netns`` (whose inode is the first item): entering
    # a namespace costs four system calls, so a connection's socket is made ahead with
    # its neighbours'. Only for the lab's long-lived namespace, never a session's.
    _spares: tuple[int, list[socket.socket]] = field(default_factory=lambda: (0, []))

    def socket(self, kind: int) -> socket.socket:
        if self.netns is None:
            sock = socket.socket(socket.AF_INET, kind)
        elif kind == socket.SOCK_STREAM:
            return self._stream()
        else:
            with inside(self.netns, cache=True):
                sock = socket.socket(socket.AF_INET, kind)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        """Close the sockets made ahead (the session is done with this upstream)."""
        _, spares = self._spares
        self._spares = (0, [])
        for sock in spares:
            sock.close()

    def _stream(self) -> socket.socket:
        assert self.netns is not None
        ino = os.stat(self.netns).st_ino  # the same namespace still (a lab brought back up)
        made_in, spares = self._spares
        if made_in != ino or not spares:
            for old in spares:
                old.close()
            spares = []
            with inside(self.netns, cache=True):
                for _ in range(_SPARES):
                    spares.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            self._spares = (ino, spares)
        sock = spares.pop()
        sock.setblocking(False)
        return sock

    async def exchange(self, packet: bytes) -> bytes:
        """Send one DNS packet to the upstream server and return its reply."""
        loop = asyncio.get_running_loop()
        sock = self.socket(socket.SOCK_DGRAM)
        try:
            await loop.sock_connect(sock, self.dns)
            await loop.sock_sendall(sock, packet)
            async with asyncio.timeout(_DNS_TIMEOUT):
                return await loop.sock_recv(sock, 65535)
        finally:
            sock.close()

    async def resolve(self, name: str) -> list[str]:
        """IPv4 addresses of ``name`` from the upstream DNS (cached briefly)."""
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit and hit[0] > now:
            return hit[1]
        query = DNSRecord.question(name, "A")
        reply = DNSRecord.parse(await self.exchange(query.pack()))
        addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
        self._cache[name] = (now + _CACHE_TTL, addresses)
        return addresses

    async def connect(self, ip: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        sock = self.socket(socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (ip, port))
        except BaseException:
            sock.close()
            raise
        return sock
