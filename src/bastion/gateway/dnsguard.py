"""DNS control without sockets: parse a query, decide it, build refusals, score tunnelling.

The gateway's resolver does the I/O; everything that looks at the bytes lives here so
that malformed packets are tested without a network. A name is answered only if a
domain entry of the session's current phase names it; anything else gets NXDOMAIN, so a
sandbox cannot even learn the addresses of hosts it may not reach.

What leaves for an allowed name is rebuilt, not forwarded: the question alone, the name
in lower case, a fresh query id (so neither letter case nor the id carries bits), and
only the query types the policy allows. Exfiltration is scored by *information
volume*: the bytes of new label text a session sends under one parent domain within a
minute (``ExfilMeter``); past the policy's budget a lookup is refused before it leaves.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from dnslib.dns import DNSError

__all__ = ["ExfilMeter", "Query", "TunnelMeter", "answers_of", "clean_query", "parent_of",
           "parse_query", "refusal", "restore"]


@dataclass(frozen=True)
class Query:
    record: DNSRecord
    name: str  # lower case, no trailing dot
    qtype: str


def parse_query(data: bytes) -> Query | None:
    """The single question of a standard query, or None if ``data`` is not one."""
    try:
        record = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, KeyError, UnicodeError, TypeError):
        return None
    except Exception:  # noqa: BLE001 - dnslib raises bare exceptions on hostile input
        return None
    if record.header.qr != 0 or record.header.opcode != 0 or len(record.questions) != 1:
        return None
    question = record.questions[0]
    try:
        name = str(question.qname).rstrip(".").lower()
        qtype = QTYPE.get(question.qtype, str(question.qtype))
    except Exception:  # noqa: BLE001 - same: untrusted bytes, any failure means "not a query"
        return None
    return Query(record, name, str(qtype))


def clean_query(query: Query, query_id: int | None = None) -> bytes:
    """The question alone, rebuilt: what is forwarded upstream for an allowed name, so
    nothing else the sandbox packed into the packet (extra sections, EDNS options,
    flags, letter case, its query id) ever leaves. Class IN only."""
    question = query.record.q
    fresh = secrets.randbelow(65536) if query_id is None else query_id
    return DNSRecord(DNSHeader(id=fresh, rd=1),
                     q=DNSQuestion(query.name + ".", question.qtype, 1)).pack()


def restore(reply: bytes, query: Query) -> bytes:
    """The upstream ``reply`` re-addressed to the sandbox's ``query``: its id and its
    question as the sandbox spelled it (resolvers that randomise letter case check)."""
    try:
        record = DNSRecord.parse(reply)
    except Exception:  # noqa: BLE001 - an unparsable reply is a failure, not an answer
        return refusal(query, rcode=RCODE.SERVFAIL)
    record.header.id = query.record.header.id
    record.questions = [query.record.q]
    record.ar = []  # no EDNS or extra records from upstream to the sandbox either
    return record.pack()


def refusal(query: Query, rcode: int = RCODE.NXDOMAIN) -> bytes:
    """A reply with no answers (NXDOMAIN by default) to ``query``."""
    reply = query.record.reply()
    reply.header.rcode = rcode
    reply.header.ra = 1
    return reply.pack()


def answers_of(data: bytes) -> list[str]:
    """The answer data of a reply packet, as strings (addresses for A/AAAA)."""
    try:
        reply = DNSRecord.parse(data)
    except Exception:  # noqa: BLE001 - an unparsable upstream reply has no answers
        return []
    return [str(rr.rdata) for rr in reply.rr]


def _entropy(text: str) -> float:
    if not text:
        return 0.0
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


class TunnelMeter:
    """Per-session tunnelling score in 0..1 from long or high-entropy labels, many unique
    subdomains under one parent in a short window, and TXT floods."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._recent: deque[tuple[float, str, str, str]] = deque()  # (t, parent, name, qtype)

    def score(self, name: str, qtype: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        labels = name.split(".")
        parent = ".".join(labels[-2:]) if len(labels) >= 2 else name
        sub = ".".join(labels[:-2])
        self._recent.append((now, parent, name, qtype))
        while self._recent and now - self._recent[0][0] > self.WINDOW:
            self._recent.popleft()
        longest = max((len(label) for label in labels), default=0)
        score = 0.0
        if longest > 40:
            score += 0.4
        elif longest > 25:
            score += 0.2
        if len(sub) >= 16 and _entropy(sub.replace(".", "")) > 3.5:
            score += 0.3
        if len(name) > 120:
            score += 0.2
        unique = {n for (_, p, n, _) in self._recent if p == parent}
        if len(unique) > 50:
            score += 0.3
        elif len(unique) > 20:
            score += 0.15
        txt = sum(1 for (_, p, _, q) in self._recent if p == parent and q in ("TXT", "NULL"))
        if txt > 20:
            score += 0.3
        elif txt > 5:
            score += 0.1
        return round(min(score, 1.0), 3)


def parent_of(name: str, wildcards: Iterable[str] = ()) -> tuple[str, str]:
    """(parent domain, the labels below it) for exfiltration accounting: the base of the
    longest allow-list wildcard (``*.X``) that covers ``name``, else its last two labels.
    Data smuggled under an allowed wildcard is charged to that wildcard."""
    best = ""
    for pattern in wildcards:
        base = pattern[2:] if pattern.startswith("*.") else None
        if base and name.endswith("." + base) and len(base) > len(best):
            best = base
    if not best:
        labels = name.split(".")
        best = ".".join(labels[-2:]) if len(labels) > 2 else name
    sub = name[:-len(best)].rstrip(".") if name != best else ""
    return best, sub


class ExfilMeter:
    """Bytes of new name text per parent domain in a sliding window.

    The part of a name below its parent counts once per window, by length: ``a1b2...``
    looked up again costs nothing (retries, caches), every new name costs its bytes —
    the whole name, not only its new labels, so data spread one nibble per label
    (``4.c.2.b.x.parent``, each label seen before) costs what it carries. Honest work
    resolves a handful of names per domain; a tunnel must keep sending new names to
    move data, so its volume grows with what it moves whatever the encoding (hex,
    decimal, base32), label length or label count."""

    WINDOW = 60.0

    def __init__(self, budget: int = 512) -> None:
        self.budget = budget
        self._seen: dict[str, dict[str, float]] = {}  # parent -> label text -> time
        self._volume: dict[str, deque[tuple[float, int]]] = {}

    def volume(self, parent: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        window = self._volume.get(parent)
        if not window:
            return 0
        while window and now - window[0][0] > self.WINDOW:
            window.popleft()
        return sum(size for _, size in window)

    def cost(self, parent: str, sub: str, now: float | None = None) -> int:
        """Bytes ``sub`` would add under ``parent`` (0 if seen within the window)."""
        now = time.monotonic() if now is None else now
        if not sub:
            return 0
        seen = self._seen.get(parent, {})
        if now - seen.get(sub, -1e18) <= self.WINDOW:
            return 0
        return len(sub)  # dots too: label boundaries carry information as well

    def charge(self, parent: str, sub: str, now: float | None = None) -> int:
        """Record a lookup that leaves; returns the parent's volume afterwards."""
        now = time.monotonic() if now is None else now
        size = self.cost(parent, sub, now)
        if size:
            seen = self._seen.setdefault(parent, {})
            seen[sub] = now
            if len(seen) > 4096:  # forget the oldest half: memory stays bounded
                for name, _ in sorted(seen.items(), key=lambda kv: kv[1])[:2048]:
                    del seen[name]
            self._volume.setdefault(parent, deque()).append((now, size))
        return self.volume(parent, now)

    def exceeds(self, parent: str, sub: str, now: float | None = None) -> tuple[bool, int]:
        """Whether looking ``sub`` up under ``parent`` would pass the budget, and the
        volume it would bring the parent to."""
        now = time.monotonic() if now is None else now
        after = self.volume(parent, now) + self.cost(parent, sub, now)
        return after > self.budget, after
