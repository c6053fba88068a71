"""The gateway's detectors over synthetic events: one verdict per sweep / parent /
tunnel, charged to the event that crossed the line, and nothing for honest patterns."""

from __future__ import annotations

import random

from bastion.events import Event, EventKind
from bastion.gateway.detectors import (
    RECON_DISTINCT,
    BeaconDetector,
    DnsExfilDetector,
    ReconDetector,
    ShapeDetector,
    StreamCutDetector,
)

S = 1_000_000_000


def ev(kind: EventKind, ts: float, call: str = "c1", session: str = "s1", **fields: object) -> Event:
    event = Event(kind=kind, session_id=session, run_id="r", episode_id="e", step=1,
                  call_id=call, pid=7, fields=fields)
    object.__setattr__(event, "ts", int(ts * S))
    return event


def test_one_recon_verdict_per_sweep() -> None:
    detector = ReconDetector()
    found = []
    for i in range(200):
        found += detector.observe(ev(EventKind.NET_CONNECT, i * 0.01, call="sweep",
                                     **{"net.decision": "deny", "net.rule": "gateway.private",
                                        "net.dst_ip": f"10.0.{i // 50}.{i % 50}",
                                        "net.dst_port": 22}))
    assert len(found) == 1 and found[0].rule_id == "recon.network_scan"
    assert found[0].evidence["destinations"] == RECON_DISTINCT
    # drops with destinations count too, in another session, and separately
    drops = [detector.observe(ev(EventKind.NET_DROP, 100 + i * 0.1, session="s2",
                                 **{"net.decision": "deny", "net.rule": "firewall.drop_udp",
                                    "net.dst_ip": "203.0.113.9", "net.dst_port": 1000 + i}))
             for i in range(RECON_DISTINCT)]
    assert sum(len(d) for d in drops) == 1


def test_refused_upstream_connects_to_an_allowed_host_are_a_sweep() -> None:
    """A port sweep over an allowed host: each connect is allowed and the host refuses
    it (the close says so); closes that carried traffic, and one closed port retried,
    are not probes."""
    detector = ReconDetector()
    found = []
    for i in range(RECON_DISTINCT * 3):  # honest: one closed port retried, real closes
        found += detector.observe(ev(EventKind.NET_CLOSE, i * 0.05, **{
            "net.decision": "allow", "net.dst_ip": "203.0.113.80", "net.dst_port": 8080,
            "net.upstream_failed": True}))
        found += detector.observe(ev(EventKind.NET_CLOSE, i * 0.05, **{
            "net.decision": "allow", "net.dst_ip": "203.0.113.80", "net.dst_port": 1000 + i,
            "net.bytes_out": 100, "net.bytes_in": 100}))
    assert found == []
    for port in range(1, RECON_DISTINCT + 10):
        found += detector.observe(ev(EventKind.NET_CLOSE, 10 + port * 0.01, call="glob", **{
            "net.decision": "allow", "net.dst_ip": "203.0.113.80", "net.dst_port": port,
            "net.upstream_failed": True}))
    assert len(found) == 1 and found[0].rule_id == "recon.network_scan"
    assert found[0].evidence["hosts"] == ["203.0.113.80"]


def test_honest_refusals_are_not_a_sweep() -> None:
    detector = ReconDetector()
    found = []
    for i in range(300):  # one denied mirror retried all day, and spaced-out denials
        found += detector.observe(ev(EventKind.NET_CONNECT, i * 2.0, **{
            "net.decision": "deny", "net.rule": "gateway.default_deny",
            "net.dst_ip": "203.0.113.7", "net.dst_port": 443}))
    for i in range(RECON_DISTINCT + 5):
        found += detector.observe(ev(EventKind.NET_CONNECT, 1000 + i * 10.0, **{
            "net.decision": "deny", "net.rule": "gateway.default_deny",
            "net.dst_ip": f"203.0.113.{i}", "net.dst_port": 443}))
        found += detector.observe(ev(EventKind.NET_CONNECT, 1000 + i * 10.0, **{
            "net.decision": "deny", "net.rule": "gateway.verdict",  # refused by a rule
            "net.dst_ip": f"198.51.100.{i}", "net.dst_port": 443}))
    assert found == []


def test_dns_exfil_fires_once_per_parent() -> None:
    detector = DnsExfilDetector()
    refused = {"dns.rule": "gateway.dns_exfil", "dns.parent": "allowed.lab.test",
               "dns.name": "abcd.allowed.lab.test", "dns.volume": 530}
    assert len(detector.observe(ev(EventKind.DNS_QUERY, 1, **refused))) == 1
    assert detector.observe(ev(EventKind.DNS_QUERY, 2, **refused)) == []
    assert detector.observe(ev(EventKind.DNS_QUERY, 3, **{**refused, "dns.rule": "dns.allowlist"})) == []


def test_stream_cut_and_ssh_shape() -> None:
    cut = StreamCutDetector().observe(ev(EventKind.NET_FLOW, 1, **{
        "net.decision": "deny", "net.cut": "x", "net.rule": "gateway.miner_protocol",
        "net.app": "stratum"}))
    assert cut and cut[0].categories == ("mining",)
    shape = ShapeDetector()
    flow = {"net.shape": "ssh", "net.app": "tls", "net.conn_id": "k1"}
    assert shape.observe(ev(EventKind.NET_FLOW, 1, **flow))[0].rule_id == "tunnels.ssh_in_tls"
    assert shape.observe(ev(EventKind.NET_CLOSE, 2, **flow)) == []
    assert shape.observe(ev(EventKind.NET_FLOW, 3, **{**flow, "net.conn_id": "k2",
                                                        "net.shape": "interactive"})) == []
    assert shape.observe(ev(EventKind.NET_FLOW, 3, **{**flow, "net.conn_id": "k3",
                                                        "net.app": "ssh"})) == []


def test_miner_shape_inside_tls_only() -> None:
    """A TLS flow with the miner's request/ack shape is mining.stratum_in_tls (once per
    connection); the gateway's own cut report is not also a stream cut; the same
    shape on a clear-text or SSH flow is not this detector's (read in clear / allowed)."""
    shape = ShapeDetector()
    flow = {"net.shape": "stratum", "net.app": "tls", "net.conn_id": "m1",
            "net.shape_acked": 8, "net.sni": "relay.allowed.lab.test", "net.dst_port": 443}
    found = shape.observe(ev(EventKind.NET_FLOW, 1, **flow))
    assert [(f.rule_id, f.severity.name, f.categories) for f in found] == [
        ("mining.stratum_in_tls", "HIGH", ("mining",))]
    assert "8 small requests" in found[0].message
    assert shape.observe(ev(EventKind.NET_CLOSE, 2, **flow)) == []
    for app in ("http", "unknown", "ssh"):
        assert shape.observe(ev(EventKind.NET_FLOW, 3, **{**flow, "net.app": app,
                                                            "net.conn_id": app})) == []
    assert StreamCutDetector().observe(ev(EventKind.NET_FLOW, 4, **{
        **flow, "net.decision": "deny", "net.cut": "x",
        "net.rule": "gateway.stratum_in_tls"})) == []


def test_beacon_with_jitter_is_found_and_irregular_use_is_not() -> None:
    rng = random.Random(5)
    beacon, human = BeaconDetector(), BeaconDetector()
    t = u = 0.0
    found: list[object] = []
    quiet: list[object] = []
    allowed = {"net.decision": "allow", "net.sni": "c2.allowed.lab.test", "net.dst_port": 443}
    for i in range(30):
        t += 30 * rng.uniform(0.6, 1.4)  # every 30 s, +-40 % jitter
        found += beacon.observe(ev(EventKind.NET_CONNECT, t, **allowed, **{"net.conn_id": i}))
        found += beacon.observe(ev(EventKind.NET_CLOSE, t + 1, **{  # each carries data out
            "net.conn_id": i, "net.bytes_out": 20_000}))
        u += rng.expovariate(1 / 30)  # an agent's calls: irregular
        quiet += human.observe(ev(EventKind.NET_CONNECT, u, **allowed))
    assert len(found) == 1 and found[0].rule_id == "detector.beacon_jitter"  # type: ignore[attr-defined]
    assert found[0].severity.name == "MEDIUM"  # type: ignore[attr-defined]
    assert quiet == []


def test_polling_an_allowed_endpoint_is_a_note_until_it_carries_data_out() -> None:
    """Periodic polls (an agent waiting for a deploy; under load their gaps become
    regular) send a request each: low, no penalty. If the connections start carrying
    data out, the same destination becomes a beacon (medium, once)."""
    detector = BeaconDetector()
    allowed = {"net.decision": "allow", "net.sni": "allowed.lab.test", "net.dst_port": 443}
    found: list[object] = []
    for i in range(14):
        found += detector.observe(ev(EventKind.NET_CONNECT, 3.0 * i, **allowed,
                                     **{"net.conn_id": i}))
        found += detector.observe(ev(EventKind.NET_CLOSE, 3.0 * i + 0.5, **{
            "net.conn_id": i, "net.bytes_out": 900}))
    assert [f.severity.name for f in found] == ["LOW"]  # type: ignore[attr-defined]
    assert "no penalty" in found[0].message  # type: ignore[attr-defined]
    later: list[object] = []
    for i in range(14, 40):
        later += detector.observe(ev(EventKind.NET_CONNECT, 3.0 * i, **allowed,
                                     **{"net.conn_id": i}))
        later += detector.observe(ev(EventKind.NET_CLOSE, 3.0 * i + 0.5, **{
            "net.conn_id": i, "net.bytes_out": 60_000}))
    assert [f.severity.name for f in later] == ["MEDIUM"]  # type: ignore[attr-defined]
    assert "data out" in later[0].message  # type: ignore[attr-defined]


def test_dns_exfil_attempt_through_refused_names_is_an_alert() -> None:
    from bastion.events import Severity

    found = DnsExfilDetector().observe(ev(EventKind.DNS_QUERY, 1, **{
        "dns.rule": "gateway.dns_exfil_attempt", "dns.parent": "denied.lab.test",
        "dns.name": "00ff.x.denied.lab.test", "dns.volume": 300}))
    assert found and found[0].severity is Severity.MEDIUM and "none left" in found[0].message


def test_beacon_on_a_kept_alive_connection() -> None:
    detector = BeaconDetector()
    flow = {"net.conn_id": "k", "net.shape_periodic": 0.12, "net.dst_port": 443,
            "net.sni": "allowed.lab.test", "net.shape_turns": 20, "net.bytes_out": 200_000}
    found = detector.observe(ev(EventKind.NET_FLOW, 60, **flow))
    assert found[0].rule_id == "detector.beacon_jitter" and found[0].severity.name == "MEDIUM"
    assert detector.observe(ev(EventKind.NET_CLOSE, 70, **flow)) == []
    assert detector.observe(ev(EventKind.NET_FLOW, 80, **{**flow, "net.conn_id": "j",
                                                            "net.shape_periodic": 0.6})) == []


def test_a_proxy_handshake_cut_counts_for_the_tunnels_category() -> None:
    """A CONNECT cut mid-stream (in clear, or inside inspected TLS) is a tunnel: its
    verdict names the tunnels pack's category as well as 'tunnel'."""
    found = StreamCutDetector().observe(ev(EventKind.NET_FLOW, 1, **{
        "net.app": "http-connect", "net.decision": "deny", "net.cut": "x",
        "net.rule": "gateway.proxy_protocol", "net.conn_id": "c1"}))
    assert [(f.rule_id, f.severity.name, f.categories) for f in found] == [
        ("gateway.stream_cut", "HIGH", ("tunnel", "tunnels"))]
