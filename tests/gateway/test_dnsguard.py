"""DNS parsing, refusals and the tunnelling score, without a network."""

from __future__ import annotations

import secrets

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway.dnsguard import (
    ExfilMeter,
    TunnelMeter,
    answers_of,
    clean_query,
    parent_of,
    parse_query,
    refusal,
    restore,
)


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
    assert [str(q.qname) for q in forwarded.questions] == ["allowed.lab.test."]
    assert forwarded.ar == [] and forwarded.rr == [] and forwarded.auth == []
    assert b"smuggled" not in clean_query(query)


def test_forwarded_query_carries_no_case_and_no_id() -> None:
    record = DNSRecord.question("AlLoWeD.lab.TEST", "A")
    query = parse_query(record.pack())
    assert query is not None
    ids = {DNSRecord.parse(clean_query(query)).header.id for _ in range(20)}
    assert len(ids) > 10  # fresh every time, whatever the sandbox chose
    assert str(DNSRecord.parse(clean_query(query)).q.qname) == "allowed.lab.test."
    upstream = DNSRecord.parse(clean_query(query, query_id=7)).reply()
    upstream.add_answer(*RR.fromZone("allowed.lab.test. 60 A 203.0.113.80"))
    back = DNSRecord.parse(restore(upstream.pack(), query))
    assert back.header.id == record.header.id
    assert str(back.q.qname) == "AlLoWeD.lab.TEST."
    assert [str(rr.rdata) for rr in back.rr] == ["203.0.113.80"]


def test_parent_of_charges_the_allowed_wildcard() -> None:
    assert parent_of("ab12.cd34.allowed.lab.test", ["*.allowed.lab.test"]) == (
        "allowed.lab.test", "ab12.cd34")
    assert parent_of("files.pythonhosted.org") == ("pythonhosted.org", "files")
    assert parent_of("pypi.org") == ("pypi.org", "")


def test_exfil_volume_grows_with_new_labels_only() -> None:
    meter = ExfilMeter(budget=512)
    assert meter.charge("pypi.org", "", now=0) == 0
    for _ in range(100):  # the same names again and again: retries, no information
        meter.charge("pythonhosted.org", "files", now=1)
    assert meter.volume("pythonhosted.org", now=1) == 5
    sent = 0
    for i in range(200):
        label = secrets.token_hex(12)  # 24 hex chars, under any "long label" threshold
        over, _ = meter.exceeds("allowed.lab.test", label, now=2 + i / 100)
        if over:
            break
        meter.charge("allowed.lab.test", label, now=2 + i / 100)
        sent += len(label)
    assert 400 < sent <= 512
    # decimal labels count the same
    other = ExfilMeter(budget=512)
    digits = [str(secrets.randbelow(10**40)).zfill(40) for _ in range(20)]
    over = [other.exceeds("x.test", d, now=0)[0] or other.charge("x.test", d, now=0) > 512
            for d in digits]
    assert any(over)
    # the window forgets
    assert meter.volume("allowed.lab.test", now=1000) == 0


def test_one_nibble_per_label_costs_what_it_carries() -> None:
    meter = ExfilMeter(budget=512)
    secret = secrets.token_hex(600)
    sent = 0
    for i in range(0, len(secret), 8):
        sub = ".".join(secret[i:i + 8]) + ".x"  # 4.c.2.b.2.6.4.b.x: every label seen before
        over, _ = meter.exceeds("allowed.lab.test", sub, now=1 + i / 1000)
        if over:
            break
        meter.charge("allowed.lab.test", sub, now=1 + i / 1000)
        sent += 4
    assert sent <= 512  # payload bytes that got out before the budget refused the rest
