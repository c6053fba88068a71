"""DNS parsing, refusals and the tunnelling score, without a network."""

from __future__ import annotations

import secrets

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway.dnsguard import TunnelMeter, answers_of, clean_query, parse_query, refusal


def test_parse_and_refuse() -> None:
    packet = DNSRecord.question("Denied.Lab.Test", "TXT").pack()
    query = parse_query(packet)
    assert query is not None and (query.name, query.qtype) == ("denied.lab.test", "TXT")
    reply = DNSRecord.parse(refusal(query))
    assert reply.header.rcode == RCODE.NXDOMAIN and reply.header.id == query.record.header.id
    assert reply.rr == [] and str(reply.q.qname) == "Denied.Lab.Test."
    assert answers_of(refusal(query)) == []


def test_responses_and_garbage_are_not_queries() -> None:
    question = DNSRecord.question("a.test")
    assert parse_query(question.reply().pack()) is None
    assert parse_query(b"") is None
    assert parse_query(b"\x00" * 5) is None


def test_tunnel_score_flags_exfiltration_patterns() -> None:
    meter = TunnelMeter()
    assert meter.score("pypi.org", "A", now=0.0) == 0.0
    assert meter.score("files.pythonhosted.org", "A", now=0.1) == 0.0
    high = 0.0
    for i in range(60):
        label = secrets.token_hex(24)
        high = meter.score(f"{label}.{i}.exfil.example", "TXT", now=1.0 + i / 100)
    assert high >= 0.9
    # the window forgets
    assert TunnelMeter().score("www.example.org", "A") < 0.2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_packets_never_raise(data: bytes) -> None:
    query = parse_query(data)
    if query is not None:
        reply = refusal(query)
        assert DNSRecord.parse(reply).header.rcode == RCODE.NXDOMAIN


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_queries_never_raise(data: st.DataObject) -> None:
    packet = bytearray(DNSRecord.question("allowed.lab.test", "A").pack())
    for _ in range(data.draw(st.integers(1, 6))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    query = parse_query(bytes(packet))
    if query is not None:
        assert isinstance(query.name, str)
        refusal(query)


def test_only_the_question_is_forwarded() -> None:
    record = DNSRecord.question("allowed.lab.test", "A")
    record.add_ar(RR("smuggled.example", QTYPE.TXT, rdata=TXT("payload")))  # extra section
    query = parse_query(record.pack())
    assert query is not None
    forwarded = DNSRecord.parse(clean_query(query))
    assert forwarded.header.id == record.header.id
    assert [str(q.qname) for q in forwarded.questions] == ["allowed.lab.test."]
    assert forwarded.ar == [] and forwarded.rr == [] and forwarded.auth == []
    assert b"smuggled" not in clean_query(query)
