"""The gateway's upstream dial on loopback: a handshake already over when ``connect``
returns is taken at once, one still under way is awaited on the loop, a refusal is an
error and a destination that never answers times out (nothing is carried either way)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from bastion.gateway import upstream as upstream_mod
from bastion.gateway.upstream import Upstream


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def _dial(up: Upstream, port: int) -> socket.socket:
    return asyncio.run(up.connect("127.0.0.1", port))


@pytest.mark.parametrize("poll_first", [True, False])
def test_a_dial_is_connected_either_way(listener: socket.socket, poll_first: bool) -> None:
    up = Upstream(dns=("127.0.0.1", 53), poll_first=poll_first)
    sock = _dial(up, listener.getsockname()[1])
    try:
        peer, _ = listener.accept()
        sock.setblocking(True)
        sock.sendall(b"ping")
        assert peer.recv(4) == b"ping"
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        peer.close()
    finally:
        sock.close()


def test_a_refused_dial_is_an_error() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound, never listening: the port refuses
    with pytest.raises(OSError):
        _dial(Upstream(dns=("127.0.0.1", 53)), port)


def test_a_dial_nobody_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener whose accept queue is full drops new SYNs: the handshake never ends
    and the dial gives up at its timeout (awaited on the loop, not blocking it)."""
    monkeypatch.setattr(upstream_mod, "_CONNECT_TIMEOUT", 0.5)
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    queued = []
    try:
        for _ in range(4):  # fill the queue (backlog 0 still queues one or two)
            extra = socket.socket()
            extra.setblocking(False)
            extra.connect_ex(("127.0.0.1", port))
            queued.append(extra)

        async def dial_and_tick() -> int:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.ensure_future(ticker())
            try:
                with pytest.raises(TimeoutError):
                    await Upstream(dns=("127.0.0.1", 53)).connect("127.0.0.1", port)
            finally:
                task.cancel()
            return ticks

        assert asyncio.run(dial_and_tick()) > 0  # the loop ran while the dial waited
    finally:
        for sock in queued:
            sock.close()
        full.close()
