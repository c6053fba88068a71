"""The ``network:`` section: what a session may reach, by phase.

Checked at load time so that a typo in an allow entry is an error with a position, not
an entry that silently never matches: domains must be hostnames (``*.`` allowed as the
first label only), CIDRs must parse, the DNS upstream must be an address.

Entries are least privilege: an entry allows what it names and nothing more. A domain
entry without ``protocol``/``port`` allows TLS on 443 and HTTP on 80 (what package
indexes and model hubs use); SSH, raw TCP or any other port must be asked for with an
explicit ``protocol:`` and ``port:``. Broad entries (a ``*.`` wildcard or raw protocol
without a port, a CIDR wider than /24) load, with a ``BroadAllowWarning`` naming them.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from typing import Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from ._base import Section

__all__ = ["DEFAULT_DNS_QTYPES", "AllowEntry", "BroadAllowWarning", "NetworkPhase",
           "NetworkPolicy"]

# the query types a sandbox may ask for unless the policy names more (dns_qtypes)
DEFAULT_DNS_QTYPES = ("A", "AAAA", "CNAME", "HTTPS")
# default ports of each protocol when an entry names a protocol but no port
_DEFAULT_PORTS: dict[str | None, frozenset[int]] = {
    None: frozenset({80, 443}), "tls": frozenset({443}), "http": frozenset({80}),
    "ssh": frozenset({22}),
}


class BroadAllowWarning(UserWarning):
    """An allow entry that allows much more than a task usually needs."""

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class AllowEntry(Section):
    """One allow-list entry: a domain (exact or ``*.``-wildcard) or a CIDR, optional port
    and protocol. For TLS and HTTP the domain is matched against SNI / Host, and the
    gateway dials that name itself; for other protocols a domain entry covers the
    addresses the session's own DNS lookups of that name returned.

    Without ``protocol``, a domain entry allows TLS and HTTP only (on 443/80 unless
    ``port`` says otherwise) and a CIDR entry any protocol; ``tcp``/``any`` allow any
    protocol the gateway carries (never miners or proxy handshakes)."""

    domain: str | None = None
    cidr: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["tcp", "tls", "http", "ssh", "any"] | None = None
    # TLS inspection of this entry's connections (``network.tls_inspect``): None follows
    # the policy; false keeps them opaque (a client that must pin its server's
    # certificate), and only their burst shape is watched
    inspect: StrictBool | None = None

    def inspected(self, policy_default: bool) -> bool:
        """Whether TLS allowed by this entry is terminated and inspected: web and
        ``tls`` entries, when the policy turns inspection on and the entry does not opt
        out (``tcp``/``any`` and CIDR entries stay opaque: they allow raw channels)."""
        if self.inspect is not None:
            return self.inspect and self.protocol in (None, "tls")
        return policy_default and self.protocol in (None, "tls") and self.domain is not None

    def allows(self, app: str, port: int) -> bool:
        """Whether this entry's protocol and port cover a connection classified ``app``
        to ``port`` (the destination itself is matched by the gateway)."""
        protocol = self.protocol
        if protocol is None and self.cidr is not None:
            protocol = "any"
        if protocol in ("tcp", "any"):
            return self.port is None or self.port == port
        if protocol is None:
            if app not in ("tls", "http"):
                return False
        elif app != protocol:
            return False
        if self.port is not None:
            return self.port == port
        if protocol is None:
            return port == (443 if app == "tls" else 80)
        return port in _DEFAULT_PORTS[protocol]

    def ports(self) -> frozenset[int] | None:
        """The ports this entry can allow (None: any port)."""
        if self.port is not None:
            return frozenset({self.port})
        if self.protocol in ("tcp", "any") or (self.protocol is None and self.cidr):
            return None
        return _DEFAULT_PORTS[self.protocol]

    def broad(self) -> str | None:
        """Why this entry is broad, or None."""
        if self.domain is not None and self.domain.startswith("*.") and self.port is None:
            return f"wildcard {self.domain!r} without a port"
        if self.protocol in ("tcp", "any") and self.port is None:
            return f"protocol {self.protocol!r} on every port of {self.domain or self.cidr}"
        if self.cidr is not None:
            network = ipaddress.ip_network(self.cidr)
            limit = 24 if network.version == 4 else 56
            if network.prefixlen < limit:
                return f"CIDR {self.cidr} is wider than /{limit}"
        return None

    @model_validator(mode="after")
    def _one_target(self) -> AllowEntry:
        if (self.domain is None) == (self.cidr is None):
            raise ValueError("an allow entry needs exactly one of 'domain' or 'cidr'")
        return self

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().lower().rstrip(".")
        labels = name.split(".")
        if labels[0] == "*":
            labels = labels[1:]
        if not labels or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
            raise ValueError(f"not a domain name or '*.' wildcard: {value!r}")
        return name

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR: {value!r}") from None


class NetworkPhase(Section):
    allow: list[AllowEntry] = Field(default_factory=list)


class NetworkPolicy(Section):
    default: Literal["deny"] = "deny"
    phases: dict[str, NetworkPhase] = Field(
        default_factory=lambda: {"setup": NetworkPhase(), "agent": NetworkPhase()}
    )
    initial_phase: str = "agent"
    dns: Literal["allowlist", "deny"] = "allowlist"
    # query types answered besides A/AAAA/CNAME/HTTPS (e.g. ["TXT", "MX"])
    dns_qtypes: list[str] = Field(default_factory=list)
    # bytes of new label text a session may send under one parent domain per minute
    # before its lookups there are refused as exfiltration
    dns_exfil_budget: int = Field(default=512, ge=64, le=1_000_000)
    # where allowed names are resolved: "ADDRESS" or "ADDRESS:PORT" (IPv4); default: the
    # host's first nameserver. Ignored for lab sessions, which use the lab's DNS.
    dns_upstream: str | None = None
    allow_private: bool = False
    # TLS inspection (issue 11): the gateway terminates the sandbox's TLS to allowed
    # names with a leaf from its own interception CA, verifies the real server, and
    # inspects the plaintext like clear text; the sandbox trusts that CA by default
    tls_inspect: StrictBool = False
    # PEM files of CAs the gateway trusts for upstream servers, besides the system store
    tls_ca: list[str] = Field(default_factory=list)

    @field_validator("tls_ca")
    @classmethod
    def _tls_ca(cls, value: list[str]) -> list[str]:
        from pathlib import Path

        for path in value:
            if not Path(path).is_file():
                raise ValueError(f"tls_ca: no such CA file {path!r}")
        return value

    @field_validator("dns_upstream")
    @classmethod
    def _upstream(cls, value: str | None) -> str | None:
        if value is None:
            return None
        address, _, port = value.partition(":")
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise ValueError(f"dns_upstream must be an IPv4 address[:port], not {value!r}") \
                from None
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"bad port in dns_upstream {value!r}")
        return value

    @field_validator("dns_qtypes")
    @classmethod
    def _qtypes(cls, value: list[str]) -> list[str]:
        from dnslib import QTYPE

        out = []
        for item in value:
            name = str(item).strip().upper()
            if not hasattr(QTYPE, name):
                raise ValueError(f"unknown DNS query type {item!r}")
            out.append(name)
        return out

    def allowed_qtypes(self) -> frozenset[str]:
        return frozenset((*DEFAULT_DNS_QTYPES, *self.dns_qtypes))

    def broad_entries(self) -> list[str]:
        """``phase[index]: why`` for every broad allow entry."""
        found = []
        for phase, entries in self.phases.items():
            for index, entry in enumerate(entries.allow):
                why = entry.broad()
                if why:
                    found.append(f"allow[{phase}][{index}]: {why}")
        return found

    @model_validator(mode="after")
    def _warn_broad(self) -> NetworkPolicy:
        for line in self.broad_entries():
            warnings.warn(f"broad network allow entry {line}", BroadAllowWarning, stacklevel=2)
        return self

    @model_validator(mode="after")
    def _phase_exists(self) -> NetworkPolicy:
        if self.initial_phase not in self.phases:
            known = ", ".join(sorted(self.phases)) or "none"
            raise ValueError(f"initial_phase {self.initial_phase!r} is not a phase (have: {known})")
        return self
