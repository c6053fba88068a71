"""Whether a classified connection may leave, and which rule said so.

Pure functions over (policy phase, destination, ``Sniff``), in the order the design
fixes: addresses that are never reachable, then protocols the gateway never carries,
then the phase's allow list, else deny. The result names the rule so that every
``net.connect`` event says *why*.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache

from ..policy.network import AllowEntry, NetworkPolicy
from .sniff import Sniff

__all__ = ["Decision", "always_denied", "decide", "domain_allowed", "match_domain",
           "reachable", "silent_allowed"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
             ipaddress.ip_address("100.100.100.200")}  # AWS/GCP/Azure, AWS v6, Alibaba
_NEVER = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fe80::/10", "ff00::/8",
)]
_PRIVATE = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
)]
# Protocols the gateway never carries: miners, and proxy handshakes that would turn an
# allowed destination into a relay to anywhere.
_NEVER_APPS = {"stratum": "gateway.miner_protocol", "socks4": "gateway.proxy_protocol",
               "socks5": "gateway.proxy_protocol", "http-connect": "gateway.proxy_protocol"}


@dataclass(frozen=True)
class Decision:
    allow: bool
    rule: str  # allow-list entry ("allow[setup][2]") or deny reason ("gateway.metadata")
    reason: str  # one line for humans (the 403 header, the event)
    dial_host: str | None = None  # name to dial instead of the sandbox's address
    dial_ip: str | None = None

    @property
    def word(self) -> str:
        return "allow" if self.allow else "deny"


@lru_cache(maxsize=4096)
def _address(text: str) -> IPAddress:
    """An address string parsed (once: the gateway sees the same few destinations)."""
    return ipaddress.ip_address(text)


@lru_cache(maxsize=256)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def always_denied(ip: IPAddress, host_addresses: Collection[IPAddress] = (),
                  allow_private: bool = False) -> str | None:
    """The rule id that makes ``ip`` unreachable whatever the allow list says, or None.
    Remembered per (address, host addresses, flag): it is asked twice per connection."""
    if isinstance(host_addresses, (frozenset, tuple)):
        return _always_denied(ip, host_addresses, allow_private)
    return _always_denied.__wrapped__(ip, host_addresses, allow_private)


@lru_cache(maxsize=4096)
def _always_denied(ip: IPAddress, host_addresses: Collection[IPAddress],
                   allow_private: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA:
        return "gateway.metadata"
    if ip in host_addresses:
        return "gateway.host_address"
    for net in _NEVER:
        if ip.version == net.version and ip in net:
            return "gateway.loopback" if ip.is_loopback else (
                "gateway.link_local" if ip.is_link_local else "gateway.reserved")
    if not allow_private:
        for net in _PRIVATE:
            if ip.version == net.version and ip in net:
                return "gateway.private"
    return None


def match_domain(pattern: str, name: str) -> bool:
    """``example.com`` matches itself only; ``*.example.com`` matches names under it."""
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def domain_allowed(entries: Iterable[AllowEntry], name: str) -> bool:
    """Whether DNS may answer ``name``: some domain entry of the phase names it."""
    return any(e.domain is not None and match_domain(e.domain, name) for e in entries)


def decide(policy: NetworkPolicy, phase: str, dst_ip: str, dst_port: int, sniff: Sniff,
           *, host_addresses: Collection[IPAddress] = (),
           resolved_name: str | None = None) -> Decision:
    """Decide one connection. ``resolved_name`` is the allowed name this session's DNS
    answered with ``dst_ip``, if any (lets domain entries cover non-TLS/HTTP protocols)."""
    try:
        ip = _address(dst_ip)
    except ValueError:
        return Decision(False, "gateway.bad_address", f"not an address: {dst_ip!r}")
    denied = always_denied(ip, host_addresses, policy.allow_private)
    if denied:
        return Decision(False, denied, f"{dst_ip} is never reachable from a session")
    never = _NEVER_APPS.get(sniff.app)
    if never:
        return Decision(False, never, f"{sniff.app} connections are never allowed")
    if sniff.error and sniff.app in ("tls", "http"):
        return Decision(False, "gateway.malformed", sniff.error)
    entries = policy.phases.get(phase)
    if entries is None:
        return Decision(False, "gateway.unknown_phase", f"no network phase {phase!r}")
    name = sniff.name
    for index, entry in enumerate(entries.allow):
        rule = f"allow[{phase}][{index}]"
        if not entry.allows(sniff.app, dst_port):
            continue
        if entry.domain is not None:
            if name is not None:
                if match_domain(entry.domain, name):
                    return Decision(True, rule, f"{name} allowed by {entry.domain}",
                                    dial_host=name)
            elif resolved_name is not None and match_domain(entry.domain, resolved_name):
                return Decision(True, rule, f"{resolved_name} allowed by {entry.domain}",
                                dial_ip=dst_ip)
        elif entry.cidr is not None:
            network = _network(entry.cidr)
            if ip.version == network.version and ip in network:
                return Decision(True, rule, f"{dst_ip} allowed by {entry.cidr}", dial_ip=dst_ip)
    target = f"{name} ({dst_ip}:{dst_port})" if name else f"{dst_ip}:{dst_port}"
    return Decision(False, "gateway.default_deny",
                    f"{target} ({sniff.app}) is not on the {phase!r} allow list")


def reachable(policy: NetworkPolicy, phase: str, dst_ip: str, dst_port: int, *,
              host_addresses: Collection[IPAddress] = (),
              resolved_name: str | None = None) -> Decision | None:
    """A refusal that holds whatever the client would send (the address is never
    reachable, or no entry of the phase allows anything on this address and port), or
    None if the first bytes must be read to decide. Lets the gateway record a probe at
    once, before (and whether or not) the client says anything."""
    try:
        ip = _address(dst_ip)
    except ValueError:
        return Decision(False, "gateway.bad_address", f"not an address: {dst_ip!r}")
    denied = always_denied(ip, host_addresses, policy.allow_private)
    if denied:
        return Decision(False, denied, f"{dst_ip} is never reachable from a session")
    entries = policy.phases.get(phase)
    if entries is None:
        return Decision(False, "gateway.unknown_phase", f"no network phase {phase!r}")
    for entry in entries.allow:
        ports = entry.ports()
        if ports is not None and dst_port not in ports:
            continue
        if entry.cidr is not None:
            network = _network(entry.cidr)
            if ip.version == network.version and ip in network:
                return None
        elif entry.domain is not None:
            if entry.protocol in (None, "tls", "http"):
                return None  # the name comes in the first bytes (SNI / Host)
            if resolved_name is not None and match_domain(entry.domain, resolved_name):
                return None
    return Decision(False, "gateway.default_deny",
                    f"{dst_ip}:{dst_port} is not on the {phase!r} allow list")


def silent_allowed(policy: NetworkPolicy, phase: str, dst_ip: str, dst_port: int, *,
                   resolved_name: str | None = None) -> bool:
    """Whether a client that has said nothing may be carried anyway: only an entry
    that allows any protocol (``tcp``/``any``) on this destination says so."""
    entries = policy.phases.get(phase)
    if entries is None:
        return False
    silent = Sniff("unknown")
    decision = decide(policy, phase, dst_ip, dst_port, silent, resolved_name=resolved_name)
    return decision.allow and entries is not None
