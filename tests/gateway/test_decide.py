"""The decision order: never-reachable addresses, never-carried protocols, the phase's
allow list, else deny — each with the rule that decided."""

from __future__ import annotations

import ipaddress

import pytest

from bastion.gateway.decide import (
    always_denied,
    decide,
    domain_allowed,
    match_domain,
    reachable,
    silent_allowed,
)
from bastion.gateway.sniff import Sniff
from bastion.policy import Policy

POLICY = Policy.from_yaml("""
name: t
network:
  initial_phase: setup
  phases:
    setup:
      allow:
        - {domain: pypi.org}
        - {domain: "*.pythonhosted.org", port: 443}
        - {cidr: 203.0.113.0/28, port: 22, protocol: ssh}
        - {domain: git.example, port: 22, protocol: ssh}
        - {domain: web.example}
    agent:
      allow: []
""").network

TLS = Sniff("tls", sni="pypi.org")


@pytest.mark.parametrize("ip,rule", [
    ("169.254.169.254", "gateway.metadata"),
    ("127.0.0.1", "gateway.loopback"),
    ("169.254.3.4", "gateway.link_local"),
    ("10.1.2.3", "gateway.private"),
    ("100.64.0.1", "gateway.private"),
    ("192.168.1.1", "gateway.private"),
    ("224.0.0.1", "gateway.reserved"),
    ("0.0.0.0", "gateway.reserved"),
])
def test_never_reachable_whatever_the_allow_list(ip: str, rule: str) -> None:
    decision = decide(POLICY, "setup", ip, 443, TLS)
    assert not decision.allow and decision.rule == rule


def test_host_addresses_and_v6_metadata() -> None:
    host = {ipaddress.ip_address("198.51.100.7")}
    assert always_denied(ipaddress.ip_address("198.51.100.7"), host) == "gateway.host_address"
    assert always_denied(ipaddress.ip_address("fd00:ec2::254")) == "gateway.metadata"
    assert always_denied(ipaddress.ip_address("::ffff:127.0.0.1")) == "gateway.loopback"
    assert always_denied(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None


def test_domain_matching() -> None:
    assert match_domain("pypi.org", "PyPI.org.")
    assert not match_domain("pypi.org", "evil-pypi.org")
    assert match_domain("*.pythonhosted.org", "files.pythonhosted.org")
    assert not match_domain("*.pythonhosted.org", "pythonhosted.org")
    assert not match_domain("*.pythonhosted.org", "xpythonhosted.org")
    assert domain_allowed(POLICY.phases["setup"].allow, "a.b.pythonhosted.org")
    assert not domain_allowed(POLICY.phases["agent"].allow, "pypi.org")


def test_tls_allowed_by_sni_dials_the_name() -> None:
    decision = decide(POLICY, "setup", "203.0.113.99", 443, TLS)
    assert decision.allow and decision.rule == "allow[setup][0]"
    assert decision.dial_host == "pypi.org"


def test_port_and_phase_restrict() -> None:
    sniff = Sniff("tls", sni="files.pythonhosted.org")
    assert decide(POLICY, "setup", "203.0.113.99", 443, sniff).allow
    assert not decide(POLICY, "setup", "203.0.113.99", 8443, sniff).allow
    denied = decide(POLICY, "agent", "203.0.113.99", 443, sniff)
    assert not denied.allow and denied.rule == "gateway.default_deny"
    assert "agent" in denied.reason


def test_cidr_with_protocol() -> None:
    ssh = Sniff("ssh", ssh_banner="SSH-2.0-x")
    assert decide(POLICY, "setup", "203.0.113.5", 22, ssh).allow
    assert not decide(POLICY, "setup", "203.0.113.5", 22, Sniff("unknown")).allow
    assert not decide(POLICY, "setup", "203.0.113.50", 22, ssh).allow


def test_domain_entry_covers_resolved_address_for_other_protocols() -> None:
    ssh = Sniff("ssh", ssh_banner="SSH-2.0-x")
    assert not decide(POLICY, "setup", "198.51.100.9", 22, ssh).allow
    decision = decide(POLICY, "setup", "198.51.100.9", 22, ssh, resolved_name="git.example")
    assert decision.allow and decision.dial_ip == "198.51.100.9"


@pytest.mark.parametrize("app,rule", [
    ("stratum", "gateway.miner_protocol"),
    ("socks5", "gateway.proxy_protocol"),
    ("http-connect", "gateway.proxy_protocol"),
])
def test_never_carried_protocols(app: str, rule: str) -> None:
    decision = decide(POLICY, "setup", "203.0.113.5", 22, Sniff(app, stratum_method="x"))
    assert not decision.allow and decision.rule == rule


def test_malformed_tls_is_denied_even_with_allowed_name() -> None:
    decision = decide(POLICY, "setup", "203.0.113.9", 443,
                      Sniff("tls", sni="pypi.org", error="tls: truncated"))
    assert not decision.allow and decision.rule == "gateway.malformed"


@pytest.mark.parametrize("app,port,allowed", [
    ("tls", 443, True), ("http", 80, True),
    ("tls", 80, False), ("http", 443, False), ("tls", 8443, False),
    ("ssh", 22, False), ("ssh", 443, False), ("unknown", 443, False), ("json-rpc", 80, False),
])
def test_a_domain_entry_allows_web_on_web_ports_only(app: str, port: int, allowed: bool) -> None:
    """Least privilege: ``{domain: web.example}`` is TLS on 443 and HTTP on 80, no more
    (an SSH server or raw TCP service on an allowed name is not thereby reachable)."""
    sniff = Sniff(app, sni="web.example" if app == "tls" else None,
                  host="web.example" if app == "http" else None)
    decision = decide(POLICY, "setup", "198.51.100.9", port, sniff, resolved_name="web.example")
    assert decision.allow is allowed, decision


def test_reachable_refuses_probes_before_any_byte() -> None:
    # nothing in setup allows 10.x, or port 3333 anywhere: decided without reading
    assert reachable(POLICY, "setup", "10.0.0.1", 443).rule == "gateway.private"
    assert reachable(POLICY, "setup", "198.51.100.9", 3333).rule == "gateway.default_deny"
    assert reachable(POLICY, "agent", "198.51.100.9", 443).rule == "gateway.default_deny"
    # 443 may carry an allowed SNI; ssh/22 needs the resolved name or the CIDR
    assert reachable(POLICY, "setup", "198.51.100.9", 443) is None
    assert reachable(POLICY, "setup", "198.51.100.9", 22) is not None
    assert reachable(POLICY, "setup", "198.51.100.9", 22, resolved_name="git.example") is None
    assert reachable(POLICY, "setup", "203.0.113.5", 22) is None


def test_silent_clients_are_carried_only_by_protocol_any() -> None:
    policy = Policy.from_dict({"name": "t", "network": {"phases": {"agent": {"allow": [
        {"cidr": "203.0.113.5/32", "port": 5432, "protocol": "any"},
        {"cidr": "203.0.113.6/32", "port": 22, "protocol": "ssh"}]}}}}).network
    assert silent_allowed(policy, "agent", "203.0.113.5", 5432)
    assert not silent_allowed(policy, "agent", "203.0.113.6", 22)
    assert not silent_allowed(POLICY, "setup", "198.51.100.9", 443)


def test_broad_entries_warn_when_loaded() -> None:
    from bastion.policy.network import BroadAllowWarning

    with pytest.warns(BroadAllowWarning) as caught:
        Policy.from_dict({"name": "broad", "network": {"phases": {"agent": {"allow": [
            {"domain": "*.example.org"}, {"cidr": "198.51.100.0/16"},
            {"domain": "x.example", "protocol": "tcp"}, {"domain": "ok.example"},
            {"cidr": "203.0.113.0/24", "port": 22, "protocol": "ssh"}]}}}})
    text = " ".join(str(w.message) for w in caught)
    assert "allow[agent][0]" in text and "allow[agent][1]" in text
    assert "allow[agent][2]" in text
    assert "allow[agent][3]" not in text and "allow[agent][4]" not in text
