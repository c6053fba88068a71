"""Traffic shape of a relayed connection: what encrypted traffic still shows.

Inside TLS the gateway cannot read the bytes, but it sees each burst the relay moves:
its direction, size and time. That is enough to tell an SSH session or a miner's
JSON-RPC riding an allowed TLS channel (directly, or behind an HTTP ``CONNECT`` to a
proxy on an allowed name) from web traffic:

* **SSH framing.** SSH packets have a fixed framing (a 4-byte length, a payload padded
  to the cipher's block, a fixed tag), so packets of *many different sizes* all have
  the same size modulo 4 (measured against the lab's OpenSSH 9.2: not modulo 8), and
  one packet per TLS record adds a constant overhead. An SSH session starts with a big
  ``KEXINIT`` each way (the algorithm lists: over 1 kB) and goes on in small framed
  packets. The rule is a **run**: the latest ``RUN`` small bursts each way all on one
  residue mod 4, the same residue both ways, at least 3 different sizes each way, and
  each direction's run began within ``FRESH`` small bursts after a big burst of that
  direction (the key exchange). A proxy handshake, TLS session tickets or a stream of
  honest requests before the tunnel do not dilute it (the previous rule counted shares
  over the whole connection, which the ``CONNECT`` exchange and tickets pushed under
  its threshold, and which a miner's constant-size messages met); it fires during
  authentication, before a session channel opens. Honest clients rarely send big
  bursts followed by runs of small ones in *both* directions (an HTTP client's big
  bursts come in; a websocket's are all small).

  Not told apart: SSH inside a TLS 1.0-1.2 CBC channel (every record of such a channel
  sits on one residue, 5 mod 16, whatever it carries: the channel is skipped), and a
  forwarder that re-chunks the stream (records of arbitrary sizes carry no framing).
* **Miner JSON-RPC (Stratum).** A miner submits shares as small requests of nearly
  constant size, each answered by a tiny acknowledgement
  (``{"id":7,"result":true,"error":null}``). ``RPC_RUN`` consecutive exchanges of a
  small request answered only by a reply under ``ACK_MAX`` bytes (TLS overhead
  included) and well under the request's size (an echo is not an ack) is that
  dialogue; no HTTP response is that small (a status line and a
  ``Content-Length`` header alone are ~40 bytes; real servers send a ``Date`` too).
  The pool still receives the login and the first shares: what shape cannot see is not
  stopped before it is seen. A run whose exchanges come on a clock at least 0.5 s
  apart is an application's keep-alive (a websocket's JSON ping answered by a short
  pong has exactly this shape), not a miner, whose shares come when they are found.

``Shape.note`` is called by the relay threads for every burst (a few integer updates;
nothing is stored per burst but a handful of counters). ``tunnel(alpn)`` says which of
these an open connection shows; ``verdict`` adds the weaker ``interactive`` dialogue
pattern (an alert only: websocket and chat clients have it too).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import deque
from typing import Any

__all__ = ["CUTS", "Shape"]

SMALL = 256  # bytes: a burst this small is "interactive-sized"
SERVER_FIRST_GAP = 0.5  # seconds of silence after which a server burst is unprompted
RUN = 5  # latest small bursts each way on one residue mod 4 (the run rule)
FRESH = 3  # a run must begin within this many small bursts after a big one
H2_CONTROL = 48  # bytes: h2 control frames (SETTINGS ack, WINDOW_UPDATE, PING) in TLS
RUN_SIZES = 3  # different sizes within each direction's run
CBC_RESIDUE = 5  # every record of a TLS 1.0-1.2 CBC channel: 5 + 16 (IV) + 16k bytes
RPC_RUN = 8  # consecutive request / tiny-acknowledgement exchanges
ACK_MAX = 96  # bytes on the wire: the largest reply that still counts as an ack
ACK_RATIO = 1.5  # a request at least this many times its ack (an echo is not an ack)
HEARTBEAT_MIN_PERIOD = 0.5  # seconds: acked exchanges this far apart on a clock are a
HEARTBEAT_SPREAD = 0.25  # keep-alive (median absolute deviation / median of the gaps)
INTERACTIVE_MIN = 40  # small bursts each way, and turns, for the dialogue pattern
EXCHANGE_GAP = 1.0  # seconds of silence before a client burst starts a new exchange
PERIODIC_MIN = 12  # exchanges before their timing is judged
PERIODIC_MIN_PERIOD = 2.0  # seconds
# what the gateway cuts at once, inside a channel allowed for TLS only: rule, reason
CUTS = {"ssh": ("gateway.ssh_in_tls", "SSH packet framing inside a channel allowed for TLS only"),
        "stratum": ("gateway.stratum_in_tls",
                    ("a miner's share/acknowledgement dialogue inside a channel allowed for "
                     "TLS only"))}


class Shape:
    """Burst statistics of one connection; updated from two threads without locks
    (counts may be off by one under a race, which no threshold here cares about)."""

    __slots__ = ("_acked_at", "_dir", "_last", "_reply", "_request", "_request_at", "_skip",
                 "alpn", "app", "bursts", "cbc",
                 "exchanges", "first_in_before_out", "h2", "rpc_run", "run_fresh", "run_len",
                 "run_res", "run_sizes", "server_first", "since_big", "small", "turns")

    def __init__(self, skip: int = 0, app: str = "tls",
                 alpn: tuple[str, ...] | list[str] = ()) -> None:
        """``skip``: bursts of each direction not counted (a TLS handshake's flights);
        ``app`` and ``alpn``: what the connection was classified as and the protocols
        its client offered. SSH (allowed as such) and clear-text HTTP (read in clear by
        the stream inspector) are never judged a tunnel here; the miner's dialogue is
        judged inside TLS only (a clear-text key-value store answers "+OK" too)."""
        self.app = app
        self.alpn = tuple(alpn)
        self.h2 = "h2" in self.alpn
        self._skip = [skip, skip]
        self.small = [0, 0]  # out (sandbox -> server), in
        self.turns = 0
        self.server_first = 0
        self.first_in_before_out = False
        self._dir = -1
        self._last = [0.0, 0.0]
        # the run rule: residue mod 4, length and sizes of each direction's latest run;
        # small bursts since the direction's last big one, and whether the run began
        # fresh after one
        self.since_big = [FRESH + 1, FRESH + 1]
        self.run_fresh = [False, False]
        self.run_res = [-1, -1]
        self.run_len = [0, 0]
        self.run_sizes: list[set[int]] = [set(), set()]
        # bursts counted, and how many of them sit where a CBC record would
        self.bursts = 0
        self.cbc = 0
        # the request/ack rule: the open exchange's request and reply sizes, and the
        # number of consecutive exchanges that were a small request and a tiny reply
        self._request = 0
        self._reply = 0
        self.rpc_run = 0
        # when the open exchange began, and when each exchange of the current acked run
        # did (a heartbeat's exchanges come on a clock; a miner's shares do not)
        self._request_at = 0.0
        self._acked_at: deque[float] = deque(maxlen=RPC_RUN + 1)
        # start times of client exchanges after silence: a beacon on a kept-alive
        # connection is periodic exchanges, not periodic connections
        self.exchanges: deque[float] = deque(maxlen=2 * PERIODIC_MIN)

    def note(self, index: int, size: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._skip[index]:
            self._skip[index] -= 1
            return
        self.bursts += 1
        if size % 16 == CBC_RESIDUE:
            self.cbc += 1
        if size < SMALL:
            self.small[index] += 1
        if size < SMALL and not (self.h2 and size < H2_CONTROL):
            # (an h2 client's control frames are 31-39 bytes in TLS, all on one residue
            # mod 4: they neither extend nor break a run; SSH packets are larger)
            self.since_big[index] += 1
            residue = size & 3
            if residue == self.run_res[index]:
                self.run_len[index] += 1
                if len(self.run_sizes[index]) < RUN_SIZES:
                    self.run_sizes[index].add(size)
            else:
                self.run_res[index] = residue
                self.run_len[index] = 1
                self.run_sizes[index] = {size}
                self.run_fresh[index] = self.since_big[index] <= FRESH
        elif size >= SMALL:
            self.since_big[index] = 0
        if index == 0:
            if self._dir != 0:  # a new request: the previous exchange is complete
                self._close_exchange()
                self._request = size
                self._request_at = now
            else:
                self._request += size
        elif self._request:
            self._reply += size
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

    def _close_exchange(self) -> None:
        if not self._request:
            return
        if _acked(self._request, self._reply):
            self.rpc_run += 1
            self._acked_at.append(self._request_at)
        else:
            self.rpc_run = 0
            self._acked_at.clear()
        self._request = self._reply = 0

    def _acked_run(self) -> int:
        """Consecutive request/ack exchanges, the open one counted once answered."""
        run = self.rpc_run
        if _acked(self._request, self._reply):
            run += 1
        return run

    def _block_cipher(self) -> bool:
        """Every burst where a CBC record sits: the residue says nothing here."""
        return self.bursts > 0 and self.cbc * 10 >= self.bursts * 9

    def _run(self, length: int, sizes: int) -> bool:
        return (self.run_res[0] == self.run_res[1] and self.run_res[0] >= 0
                and all(self.run_fresh) and min(self.run_len) >= length
                and min(len(s) for s in self.run_sizes) >= sizes
                and not self._block_cipher())

    def tunnel(self) -> str | None:
        """``ssh`` or ``stratum`` when the connection carries one, else None. A client
        that offered HTTP/2 is never judged a miner by the request/ack rule (HPACK makes
        h2 responses tiny: an API's answers look like acks)."""
        if self.app in ("ssh", "http"):
            return None
        if self._run(RUN, RUN_SIZES):
            return "ssh"
        if (not self.h2 and self.app == "tls" and self._acked_run() >= RPC_RUN
                and not self._heartbeat()):
            return "stratum"
        return None

    def _heartbeat(self) -> bool:
        """Whether the acked run's exchanges come on a clock at least
        ``HEARTBEAT_MIN_PERIOD`` apart: an application's keep-alive (a websocket's JSON
        ping answered by a short pong), not a miner (its shares come when found)."""
        starts = list(self._acked_at)
        if self._request and _acked(self._request, self._reply):
            starts.append(self._request_at)
        if len(starts) < 3:
            return False
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        median = statistics.median(gaps)
        return (median >= HEARTBEAT_MIN_PERIOD
                and statistics.median(abs(g - median) for g in gaps) <= HEARTBEAT_SPREAD * median)

    def verdict(self) -> str | None:
        found = self.tunnel()
        if found is not None:
            return found
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
        if self._acked_run():
            out["net.shape_acked"] = self._acked_run()
        spread = self.periodic()
        if spread is not None:
            out["net.shape_periodic"] = spread
        return out


def _acked(request: int, reply: int) -> bool:
    """One exchange of the miner's dialogue: a small request answered by a tiny reply
    well under its size (a submitted share and its ``"result": true``; an echo or a
    chat message's answer is about as large as what was sent)."""
    return 0 < request < SMALL and 0 < reply < ACK_MAX and request >= ACK_RATIO * reply
