"""The gateway's read with a timeout never loses bytes: what it reads is relayed."""

from __future__ import annotations

import asyncio
import socket

from bastion.gateway.server import _recv


def test_a_read_that_times_out_as_data_arrives_loses_nothing() -> None:
    """A client that drips chunks at about the read timeout: every byte sent is read,
    in order, whichever of the timeout and the data comes first (a cancelled
    ``sock_recv`` that had already read dropped a chunk from the middle of a header)."""

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        sent = b"".join(f"chunk{i:04d};".encode() for i in range(500))

        async def drip() -> None:
            for i in range(0, len(sent), 10):
                theirs.send(sent[i:i + 10])
                await asyncio.sleep(0.001 * (i % 3))
            theirs.close()

        writer = asyncio.ensure_future(drip())
        got = b""
        while True:
            chunk = await _recv(loop, ours, 4096, 0.001)
            if chunk is None:
                continue  # timed out: what arrives stays in the socket
            if not chunk:
                break
            got += chunk
        await writer
        ours.close()
        assert got == sent
        return got

    asyncio.run(main())
