"""Traffic shape, without a network: SSH framing inside TLS is told from web traffic."""

from __future__ import annotations

import random

from bastion.gateway.shape import Shape

TLS13 = 22  # record header + content type + AEAD tag


def ssh_packet(payload: int) -> int:
    """Wire size of one SSH packet (chacha20-poly1305) carrying ``payload`` bytes."""
    body = 1 + payload
    padding = 8 - body % 8
    if padding < 4:
        padding += 8
    return 4 + body + padding + 16


def test_ssh_session_inside_tls_is_recognised() -> None:
    shape = Shape()
    rng = random.Random(1)
    t = 0.0
    for _ in range(12):  # commands and their output, keystroke echoes
        shape.note(0, ssh_packet(rng.randint(1, 60)) + TLS13, now=t)
        shape.note(1, ssh_packet(rng.randint(1, 120)) + TLS13, now=t + 0.01)
        t += 0.7
    assert shape.verdict() == "ssh"
    assert shape.fields()["net.shape"] == "ssh"


def test_web_traffic_is_not_ssh() -> None:
    rng = random.Random(2)
    chat, pings = Shape(), Shape()
    t = 0.0
    for _ in range(200):  # websocket chat: messages of any size, pushes from the server
        chat.note(0, rng.randint(20, 250), now=t)
        chat.note(1, rng.randint(20, 250), now=t + 0.6)
        pings.note(0, 6 + TLS13, now=t)  # ping/pong keep-alives: one size each way
        pings.note(1, 6 + TLS13, now=t + 0.6)
        t += 1.5
    # a dialogue of small bursts, but not SSH's framing: reported as a shape, no more
    assert chat.verdict() == "interactive" and pings.verdict() == "interactive"
    download = Shape()
    download.note(0, 300)
    for _ in range(1000):
        download.note(1, 65536)
    assert download.verdict() is None


def test_periodic_exchanges_on_one_connection() -> None:
    rng = random.Random(3)
    beacon, chat = Shape(), Shape()
    t = u = 0.0
    for _ in range(20):
        t += 20 * rng.uniform(0.7, 1.3)  # check in every 20 s, jittered
        beacon.note(0, 120, now=t)
        beacon.note(1, 90, now=t + 0.05)
        u += rng.expovariate(1 / 20)  # a person (or an agent) talking when it likes
        chat.note(0, 120, now=u)
        chat.note(1, 90, now=u + 0.05)
    spread = beacon.periodic()
    assert spread is not None and spread < 0.35
    assert beacon.fields()["net.shape_periodic"] == spread
    assert chat.periodic() is None or chat.periodic() > 0.35
