"""Traffic shape of a relayed connection: what encrypted traffic still shows.

Inside TLS the gateway cannot read the bytes, but it sees each burst the relay moves:
its direction, size and time. That is enough to tell an SSH session (or any tunnel of
one) riding an allowed TLS channel from web traffic:

* SSH packets have a fixed framing: a 4-byte length, a payload padded to the cipher's
  block (8 or 16 bytes) and a 16-byte tag, so packets of *many different sizes* all
  have the same size modulo 4; wrapped one packet per TLS record (``openssl
  s_client``, ``socat``, ``stunnel``) that stays true with a constant TLS overhead
  added. Web traffic (HTTP/1, websocket messages) has sizes spread over all residues,
  and repeated fixed-size messages (pings) are few distinct sizes.
* An SSH session is a dialogue of small bursts in both directions, and the server
  speaks on its own (its banner, echoes, prompts) — HTTPS servers answer requests.

``Shape.note`` is called by the relay threads for every burst (a few integer updates;
nothing is stored per burst). ``verdict`` says ``ssh`` when the framing signature is
unmistakable (the gateway cuts), ``interactive`` for the weaker dialogue pattern (an
alert), else None.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import deque
from typing import Any

__all__ = ["Shape"]

SMALL = 256  # bytes: a burst this small is "interactive-sized"
SERVER_FIRST_GAP = 0.5  # seconds of silence after which a server burst is unprompted
SSH_MIN_BURSTS = 5  # small bursts each way before the framing signature counts
SSH_RESIDUE_SHARE = 0.8  # share of small bursts on one residue mod 4, each way
SSH_DISTINCT_SIZES = 3  # different small burst sizes each way
INTERACTIVE_MIN = 40  # small bursts each way, and turns, for the dialogue pattern
EXCHANGE_GAP = 1.0  # seconds of silence before a client burst starts a new exchange
PERIODIC_MIN = 12  # exchanges before their timing is judged
PERIODIC_MIN_PERIOD = 2.0  # seconds


class Shape:
    """Burst statistics of one connection; updated from two threads without locks
    (counts may be off by one under a race, which no threshold here cares about)."""

    __slots__ = ("_dir", "_last", "_skip", "exchanges", "first_in_before_out", "residues",
                 "server_first", "sizes", "small", "turns")

    def __init__(self, skip: int = 0) -> None:
        """``skip``: bursts of each direction not counted (a TLS handshake's flights)."""
        self._skip = [skip, skip]
        self.small = [0, 0]  # out (sandbox -> server), in
        self.residues = [[0] * 4, [0] * 4]
        self.sizes: list[set[int]] = [set(), set()]
        self.turns = 0
        self.server_first = 0
        self.first_in_before_out = False
        self._dir = -1
        self._last = [0.0, 0.0]
        # start times of client exchanges after silence: a beacon on a kept-alive
        # connection is periodic exchanges, not periodic connections
        self.exchanges: deque[float] = deque(maxlen=2 * PERIODIC_MIN)

    def note(self, index: int, size: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._skip[index]:
            self._skip[index] -= 1
            return
        if size < SMALL:
            self.small[index] += 1
            self.residues[index][size & 3] += 1
            if len(self.sizes[index]) < 16:
                self.sizes[index].add(size)
        if self._dir != index:
            if self._dir == -1 and index == 1:
                self.first_in_before_out = True
            self.turns += 1
            self._dir = index
        if index == 1 and now - self._last[0] > SERVER_FIRST_GAP \
                and now - self._last[1] > SERVER_FIRST_GAP:
            self.server_first += 1
        if index == 0 and now - max(self._last) > EXCHANGE_GAP:
            self.exchanges.append(now)
        self._last[index] = now

    def _framed(self, index: int) -> bool:
        small = self.small[index]
        return (small >= SSH_MIN_BURSTS and len(self.sizes[index]) >= SSH_DISTINCT_SIZES
                and max(self.residues[index]) >= SSH_RESIDUE_SHARE * small)

    def verdict(self) -> str | None:
        if self._framed(0) and self._framed(1) and self.turns >= 2 * SSH_MIN_BURSTS:
            return "ssh"
        if (min(self.small) >= INTERACTIVE_MIN and self.turns >= INTERACTIVE_MIN
                and self.server_first >= 3):
            return "interactive"
        return None

    def periodic(self) -> float | None:
        """Spread (median absolute deviation / median) of the gaps between exchanges,
        once there are enough of them at least ``PERIODIC_MIN_PERIOD`` apart."""
        if len(self.exchanges) < PERIODIC_MIN:
            return None
        gaps = [b - a for a, b in itertools.pairwise(self.exchanges)]
        median = statistics.median(gaps)
        if median < PERIODIC_MIN_PERIOD:
            return None
        return round(statistics.median(abs(g - median) for g in gaps) / median, 3)

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"net.shape_small_out": self.small[0],
                               "net.shape_small_in": self.small[1],
                               "net.shape_turns": self.turns,
                               "net.shape_server_first": self.server_first}
        shape = self.verdict()
        if shape is not None:
            out["net.shape"] = shape
        spread = self.periodic()
        if spread is not None:
            out["net.shape_periodic"] = spread
        return out
