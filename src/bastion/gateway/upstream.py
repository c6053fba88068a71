"""Where allowed traffic goes: the host's network, or the simulated internet (lab).

An ``Upstream`` opens the gateway's outbound sockets in one network namespace (the
host's, or the lab's, which has no uplink at all) and resolves names through one DNS
server. The gateway dials *names* it resolved itself, never the address a sandbox
supplied for a TLS/HTTP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
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
_RECHECK = 1.0  # seconds between checks that the namespace is still the same one


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
    # CA files (PEM) trusted for this upstream's TLS servers besides the system store
    # (TLS inspection verifies the real server: the lab's servers use the lab's CA)
    ca_files: tuple[str, ...] = ()
    _cache: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    # unconnected TCP sockets made in ``netns`` (whose inode is the first item): entering
    # a namespace costs four system calls, so a connection's socket is made ahead with
    # its neighbours'. Only for the lab's long-lived namespace, never a session's.
    _spares: tuple[int, list[socket.socket]] = field(default_factory=lambda: (0, []))
    _checked: float = 0.0  # when the namespace's identity is to be checked again
    # whether a fresh connect is polled once before the loop watches it (the benchmark
    # turns it off to measure what it saves)
    poll_first: bool = True
    recheck: float = _RECHECK  # seconds between checks of the namespace's identity

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
        made_in, spares = self._spares
        now = time.monotonic()
        ino = made_in
        if not spares or now >= self._checked:
            # the same namespace still (a lab brought back up)? A stat of a path under
            # /run/netns costs a few hundred microseconds on a host with many
            # namespaces: asked when the spares run out and at most once a second (a
            # spare left from a namespace since removed fails to connect: refused)
            ino = os.stat(self.netns).st_ino
            self._checked = now + self.recheck
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
        """A connected TCP socket to ``ip:port`` (raises OSError / TimeoutError).

        The handshake is often over by the time ``connect`` returns EINPROGRESS (a
        nearby server: the SYN-ACK is processed in the same system call), so the socket
        is polled once without waiting before the loop is asked to watch it: a round
        through the event loop costs more than the handshake itself."""
        loop = asyncio.get_running_loop()
        sock = self.socket(socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex((ip, port))
            if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                if self.poll_first and poller.poll(0):
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                else:
                    async with asyncio.timeout(_CONNECT_TIMEOUT):
                        await _writable(loop, sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"connect to {ip}:{port}: {os.strerror(err)}")
        except BaseException:
            sock.close()
            raise
        return sock


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Until ``sock`` is writable (its non-blocking connect finished, either way)."""
    ready = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(fd)
