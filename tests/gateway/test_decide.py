"""The decision order: never-reachable addresses, never-carried protocols, the phase's
allow list, else deny — each with the rule that decided."""

from __future__ import annotations

import ipaddress

import pytest

from bastion.gateway.decide import always_denied, decide, domain_allowed, match_domain
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
        - {domain: git.example, port: 22}
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
