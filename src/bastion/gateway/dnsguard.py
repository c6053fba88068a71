"""DNS control without sockets: parse a query, decide it, build refusals, score tunnelling.

The resolver (``resolver.py``) does the I/O; everything that looks at the bytes lives
here so that malformed packets are tested without a network. A name is answered only if
a domain entry of the session's current phase names it; anything else gets NXDOMAIN,
so a sandbox cannot even learn the addresses of hosts it may not reach.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from dnslib.dns import DNSError

__all__ = ["Query", "TunnelMeter", "answers_of", "clean_query", "parse_query", "refusal"]


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


def clean_query(query: Query) -> bytes:
    """The question alone, rebuilt: what is forwarded upstream for an allowed name, so
    nothing else the sandbox packed into the packet (extra sections, EDNS options,
    flags) ever leaves."""
    question = query.record.q
    return DNSRecord(DNSHeader(id=query.record.header.id, rd=1),
                     q=DNSQuestion(question.qname, question.qtype, question.qclass)).pack()


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
