"""The ``network:`` section: what a session may reach, by phase.

Checked at load time so that a typo in an allow entry is an error with a position, not
an entry that silently never matches: domains must be hostnames (``*.`` allowed as the
first label only), CIDRs must parse, the DNS upstream must be an address.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._base import Section

__all__ = ["AllowEntry", "NetworkPhase", "NetworkPolicy"]

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class AllowEntry(Section):
    """One allow-list entry: a domain (exact or ``*.``-wildcard) or a CIDR, optional port
    and protocol. For TLS and HTTP the domain is matched against SNI / Host, and the
    gateway dials that name itself; for other protocols a domain entry covers the
    addresses the session's own DNS lookups of that name returned."""

    domain: str | None = None
    cidr: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["tcp", "tls", "http", "ssh", "any"] = "any"

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
    # where allowed names are resolved: "ADDRESS" or "ADDRESS:PORT" (IPv4); default: the
    # host's first nameserver. Ignored for lab sessions, which use the lab's DNS.
    dns_upstream: str | None = None
    allow_private: bool = False

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

    @model_validator(mode="after")
    def _phase_exists(self) -> NetworkPolicy:
        if self.initial_phase not in self.phases:
            known = ", ".join(sorted(self.phases)) or "none"
            raise ValueError(f"initial_phase {self.initial_phase!r} is not a phase (have: {known})")
        return self
