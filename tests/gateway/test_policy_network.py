"""The network section of the policy: bad entries are load errors, not silent misses."""

from __future__ import annotations

import pytest

from bastion.errors import PolicyError
from bastion.gateway import _dns_upstream
from bastion.policy import Policy


def _load(network: str) -> Policy:
    return Policy.from_yaml(f"name: t\nnetwork:\n{network}")


def test_valid_entries_are_normalised() -> None:
    policy = _load("  dns_upstream: 198.51.100.53:5353\n  phases:\n    agent:\n      allow:\n"
                   "        - {domain: '*.PythonHosted.org.', port: 443}\n"
                   "        - {cidr: 203.0.113.7}\n")
    allow = policy.network.phases["agent"].allow
    assert allow[0].domain == "*.pythonhosted.org"
    assert allow[1].cidr == "203.0.113.7/32"
    assert _dns_upstream(policy.network.dns_upstream) == ("198.51.100.53", 5353)
    assert _dns_upstream(None) is None


@pytest.mark.parametrize("entry", [
    "{domain: 'bad domain'}", "{domain: 'a.*.b'}", "{domain: '*'}", "{cidr: 300.1.1.1/8}",
    "{cidr: 10.0.0.0/8, domain: x.org}", "{domain: x.org, port: 0}",
    "{domain: x.org, protocol: stratum}", "{domain: x.org, bogus: 1}",
])
def test_bad_entries_are_errors(entry: str) -> None:
    with pytest.raises(PolicyError):
        _load(f"  phases:\n    agent:\n      allow:\n        - {entry}\n")


@pytest.mark.parametrize("upstream", ["dns.example", "1.2.3.4:x", "::1"])
def test_bad_dns_upstream(upstream: str) -> None:
    with pytest.raises(PolicyError):
        _load(f"  dns_upstream: '{upstream}'\n")


