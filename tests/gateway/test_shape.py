"""Traffic shape, without a network: SSH framing and a miner's dialogue inside TLS are
told from web traffic. The attack sequences are the burst sizes the gateway measured
in the lab (``tests/lab/test_tls_tunnels.py`` runs the same attacks for real)."""

from __future__ import annotations

import random
from collections.abc import Callable

from bastion.gateway.shape import CUTS, Shape

TLS13 = 22  # record header + content type + AEAD tag

# (direction, size) as the gateway's relay saw them: TLS to relay.allowed.lab.test:443,
# `CONNECT 203.0.113.66:22`, then `ssh root@127.0.0.1 -p 2224 'echo SHELL-REACHED'`
# through a local forwarder. The ClientHello was read by the classifier (not a burst).
SSH_VIA_CONNECT = [
    (1, 1458), (0, 80), (1, 510),  # TLS: server flight, client Finished, two tickets
    (0, 81), (1, 61),  # CONNECT / 200 Connection established
    (0, 63), (1, 63),  # SSH version banners (clear text lines)
    (0, 1582), (1, 1110), (0, 1230), (1, 1586),  # KEXINIT, key exchange
    (0, 38), (0, 66), (1, 66), (0, 82), (1, 66), (0, 162), (1, 122), (0, 330), (1, 50),
    (0, 134), (1, 450), (1, 66),  # NEWKEYS, auth; channel open; host keys
    (0, 98),  # the exec request: "Starting session" once it reaches sshd
    (1, 94), (0, 58), (1, 74),
]
EXEC_REQUEST = SSH_VIA_CONNECT.index((0, 98))

# TLS to the same relay, `CONNECT 203.0.113.33:3333`, then a Stratum client: subscribe,
# authorize, and a share submitted every 0.3 s, each answered `{"result": true}`
STRATUM_VIA_CONNECT = [(1, 1460), (0, 80), (1, 510), (0, 85), (1, 61), (0, 90), (1, 102),
                       (0, 92), (1, 63)] + [(0, 128), (1, 63)] * 12


def feed(shape: Shape, bursts: list[tuple[int, int]], step: float = 0.01) -> list[str | None]:
    """The shape's ``tunnel()`` after each burst."""
    seen = []
    for i, (direction, size) in enumerate(bursts):
        shape.note(direction, size, now=i * step)
        seen.append(shape.tunnel())
    return seen


def first(seen: list[str | None]) -> int | None:
    return next((i for i, s in enumerate(seen) if s is not None), None)


def test_ssh_behind_a_connect_in_tls_is_seen_before_the_session_opens() -> None:
    shape = Shape(skip=2, app="tls")
    seen = feed(shape, SSH_VIA_CONNECT)
    at = first(seen)
    assert at is not None and seen[at] == "ssh"
    # seen on the burst before the exec request: the gateway cuts before forwarding it
    assert at < EXEC_REQUEST
    assert shape.fields()["net.shape"] == "ssh"
    assert CUTS["ssh"][0] == "gateway.ssh_in_tls"


def test_ssh_wrapped_directly_in_tls_is_recognised() -> None:
    """stunnel-like: no CONNECT, packets of random sizes after the key exchange."""

    def ssh_packet(payload: int) -> int:  # chacha20-poly1305 framing
        body = 1 + payload
        padding = 8 - (4 + body) % 8
        if padding < 4:
            padding += 8
        return 4 + body + padding + 16

    rng = random.Random(1)
    bursts = [(1, 1460), (0, 80), (1, 510), (0, 63), (1, 63), (0, 1500), (1, 1100),
              (0, 1200), (1, 1500)]
    for _ in range(8):
        bursts += [(0, ssh_packet(rng.randint(1, 60)) + TLS13),
                   (1, ssh_packet(rng.randint(1, 120)) + TLS13)]
    assert "ssh" in feed(Shape(skip=2, app="tls"), bursts)


def test_stratum_behind_a_connect_in_tls_is_a_miner() -> None:
    shape = Shape(skip=2, app="tls")
    seen = feed(shape, STRATUM_VIA_CONNECT)
    at = first(seen)
    assert at is not None and seen[at] == "stratum"
    # the 8th acknowledged share: subscribe, authorize and 7 shares went through
    assert STRATUM_VIA_CONNECT[:at + 1].count((0, 128)) == 8
    upto = Shape(skip=2, app="tls")
    feed(upto, STRATUM_VIA_CONNECT[:at + 1])
    assert upto.fields()["net.shape_acked"] == 8 and upto.fields()["net.shape"] == "stratum"
    assert CUTS["stratum"][0] == "gateway.stratum_in_tls"


def test_not_judged_where_another_layer_reads_the_bytes() -> None:
    """Allowed SSH is SSH; clear-text HTTP (websockets included) is read by the stream
    inspector; a request/ack dialogue in clear text (a key-value store's +OK) is not a
    miner by shape; and an h2 client is never judged a miner (pings are acked)."""
    assert first(feed(Shape(skip=2, app="ssh"), SSH_VIA_CONNECT)) is None
    assert first(feed(Shape(app="http"), STRATUM_VIA_CONNECT)) is None
    assert first(feed(Shape(app="unknown"), STRATUM_VIA_CONNECT)) is None
    assert first(feed(Shape(skip=2, app="tls", alpn=["h2", "http/1.1"]),
                      STRATUM_VIA_CONNECT)) is None



def test_ssh_is_seen_even_where_the_client_offered_h2() -> None:
    """Offering ALPN h2 is a flag the attacker sets; h2's own control frames (31-39
    bytes in TLS, all on one residue) are left out of runs, and SSH's packets are
    larger, so the same sequence is still SSH, at the same burst."""
    plain = first(feed(Shape(skip=2, app="tls"), SSH_VIA_CONNECT))
    h2 = first(feed(Shape(skip=2, app="tls", alpn=["h2", "http/1.1"]), SSH_VIA_CONNECT))
    assert h2 is not None and h2 <= EXEC_REQUEST and plain is not None and plain <= h2


def _honest(kind: str, rng: random.Random) -> list[tuple[int, int]]:
    """Honest TLS workloads, as burst sizes (TLS overhead included)."""
    out = [(1, rng.randint(1300, 4000)), (0, 80), (1, rng.choice([0, 250, 510]) or 300)]
    if kind == "keepalive":  # HTTP/1.1 client, many requests on one connection
        for _ in range(300):
            out += [(0, rng.randint(90, 250)), (1, rng.choice([rng.randint(120, 255),
                                                                rng.randint(300, 16000)]))]
    elif kind == "websocket":  # chat over wss: small messages and pushes both ways
        out += [(0, rng.randint(200, 400)), (1, rng.randint(150, 200))]
        for _ in range(600):
            out += [(0, rng.randint(30, 250)), (1, rng.randint(30, 250))]
            if rng.random() < 0.3:
                out.append((1, rng.randint(30, 250)))
    elif kind == "echo":  # a websocket echo: the reply is the message, unmasked
        for _ in range(300):
            size = rng.randint(30, 200)
            out += [(0, size), (1, size - 4)]
    elif kind == "pings":  # keep-alive pings, one size each way
        for _ in range(300):
            out += [(0, 6 + TLS13), (1, 6 + TLS13)]
    elif kind == "download":
        out.append((0, 300))
        out += [(1, 65536)] * 1000
    elif kind == "uploads":  # an API client: big uploads, small JSON answers, polls
        for _ in range(200):
            out += [(0, rng.randint(1000, 60000)), (1, rng.randint(60, 250))]
            out += [(0, rng.randint(90, 250)), (1, rng.randint(60, 250))] * rng.randint(0, 6)
    elif kind == "h2":  # an h2 client: control frames, HPACK-small headers, data
        out += [(0, 24 + 9 + 18 + TLS13), (1, 9 + 18 + TLS13), (0, 9 + TLS13), (1, 9 + TLS13)]
        for _ in range(300):
            out += [(0, rng.randint(14, 60) + TLS13)]  # HEADERS (+ a small DATA)
            if rng.random() < 0.2:
                out.append((0, rng.randint(300, 16000)))  # an upload
            out += [(1, rng.randint(9, 40) + TLS13)]  # response HEADERS
            out += [(1, rng.choice([rng.randint(20, 200), rng.randint(300, 16000)]))]
            out += rng.choice([[], [(0, 13 + TLS13)], [(1, 17 + TLS13), (0, 17 + TLS13)],
                               [(1, 13 + TLS13), (0, 13 + TLS13)]])  # window updates, pings
    elif kind == "cbc":  # TLS 1.2 CBC: every record 5 + 16 + 16k bytes
        for _ in range(300):
            out += [(0, 21 + 16 * rng.randint(1, 14)), (1, 21 + 16 * rng.randint(1, 14))]
    return out


def test_honest_tls_is_never_a_tunnel_or_a_miner() -> None:
    """Many random honest connections of each kind (a false cut is as bad as a miss)."""
    for kind in ("keepalive", "websocket", "echo", "pings", "download", "uploads", "cbc",
                 "h2"):
        for seed in range(60):
            rng = random.Random(f"{kind}-{seed}")
            alpn = ("h2", "http/1.1") if kind == "h2" else rng.choice([(), ("http/1.1",)])
            shape = Shape(skip=2, app="tls", alpn=alpn)
            assert first(feed(shape, _honest(kind, rng))) is None, (kind, seed)


def test_interactive_dialogue_is_only_a_shape() -> None:
    rng = random.Random(2)
    chat = Shape(skip=2, app="tls")
    t = 0.0
    for direction, size in _honest("websocket", rng):
        chat.note(direction, size, now=t)
        t += 0.6
    assert chat.verdict() == "interactive" and chat.tunnel() is None


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


def _acked_dialogue(gap: Callable[[], float], beats: int = 30) -> str | None:
    """TLS, a websocket upgrade, then ``beats`` exchanges of a 64-byte message answered
    by a 39-byte one (a JSON ping / pong, or a share / ack: the same sizes on the wire),
    the next one ``gap()`` seconds after each answer."""
    shape = Shape(skip=2, app="tls")
    bursts = [(1, 3000), (0, 80), (1, 510), (0, 300), (1, 180)] + [(0, 64), (1, 39)] * beats
    now = 0.0
    for direction, size in bursts:
        shape.note(direction, size, now=now)
        if shape.tunnel():
            return shape.tunnel()
        now += gap() if direction == 1 else 0.01
    return None


def test_a_websocket_heartbeat_is_not_a_miner() -> None:
    """An application's keep-alive over wss ({"type":"ping"} answered {"type":"pong"})
    has the share/ack sizes, but on a clock: never cut (a false cut of an honest client
    is as bad as a miss), with or without jitter."""
    rng = random.Random(5)
    assert _acked_dialogue(lambda: 25.0) is None
    assert _acked_dialogue(lambda: 20 + rng.uniform(-2, 2)) is None
    assert _acked_dialogue(lambda: 1.0) is None
    assert _acked_dialogue(lambda: 0.6 + rng.uniform(-0.05, 0.05)) is None  # a 0.6 s clock


def test_shares_found_at_random_times_are_a_miner() -> None:
    """The same sizes at the times a miner finds shares (random, seconds apart) or
    back to back: cut after RPC_RUN acknowledged exchanges."""
    rng = random.Random(6)
    assert _acked_dialogue(lambda: rng.expovariate(1 / 5)) == "stratum"
    assert _acked_dialogue(lambda: 0.06) == "stratum"
