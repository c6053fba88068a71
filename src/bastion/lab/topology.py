"""The simulated internet's fixed layout: hosts, addresses, names, services.

Everything lives on the documentation ranges 198.51.100.0/24 and 203.0.113.0/24 inside a
network namespace bastion creates, with no link to anything else. (192.0.2.0/24 is left
alone: hosts often use it for real interfaces, as the CI machines do.)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DNS_IP", "HOSTS", "ZONE", "LabHost", "lookup"]


@dataclass(frozen=True)
class LabHost:
    key: str  # short name used in status and nft counter names
    ip: str
    names: tuple[str, ...]
    services: tuple[str, ...]  # "proto/port what"


DNS_IP = "198.51.100.53"

HOSTS: tuple[LabHost, ...] = (
    LabHost("dns", DNS_IP, ("dns.lab.test",), ("udp/53 dns",)),
    LabHost("ssh", "203.0.113.22", ("ssh.lab.test",), ("tcp/22 openssh",)),
    LabHost("pool", "203.0.113.33", ("pool.lab.test", "xmr.pool.lab.test"),
            ("tcp/3333 stratum", "tcp/443 stratum", "tcp/3334 stratum+tls")),
    LabHost("allowed", "203.0.113.80", ("allowed.lab.test", "*.allowed.lab.test"),
            ("tcp/80 http", "tcp/443 https")),
    LabHost("denied", "203.0.113.81", ("denied.lab.test", "*.denied.lab.test"),
            ("tcp/80 http", "tcp/443 https")),
    # the attacker's host under an allowed name (covered by *.allowed.lab.test): what an
    # agent may control or share behind a real policy's wildcard or mirror
    LabHost("relay", "203.0.113.66", ("relay.allowed.lab.test",),
            ("tcp/22 openssh (trusts the lab's authorized_keys)",
             "tcp/80 http + CONNECT/absolute-form proxy + stratum, records every byte",
             "tcp/443 https", "tcp/1080 socks5 proxy", "tcp/3333 stratum (records bytes)",
             "tcp/8443 tls relay to its sshd")),
)

# name (exact, or "*.parent") -> address
ZONE: dict[str, str] = {name: host.ip for host in HOSTS for name in host.names}


def lookup(name: str) -> str | None:
    """The lab address of ``name`` (exact names first, then the closest wildcard)."""
    name = name.lower().rstrip(".")
    if name in ZONE:
        return ZONE[name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        hit = ZONE.get("*." + ".".join(labels[i:]))
        if hit:
            return hit
    return None


def host(key: str) -> LabHost:
    for item in HOSTS:
        if item.key == key:
            return item
    raise KeyError(key)
