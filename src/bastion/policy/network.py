"""The ``network:`` section: what a session may reach, by phase."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import Section

__all__ = ["AllowEntry", "NetworkPhase", "NetworkPolicy"]


class AllowEntry(Section):
    """One allow-list entry: a domain (exact or ``*.``-wildcard) or a CIDR, optional port
    and protocol. For TLS and HTTP the domain is matched against SNI / Host."""

    domain: str | None = None
    cidr: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["tcp", "tls", "http", "ssh", "any"] = "any"

    @model_validator(mode="after")
    def _one_target(self) -> AllowEntry:
        if (self.domain is None) == (self.cidr is None):
            raise ValueError("an allow entry needs exactly one of 'domain' or 'cidr'")
        return self


class NetworkPhase(Section):
    allow: list[AllowEntry] = Field(default_factory=list)


class NetworkPolicy(Section):
    default: Literal["deny"] = "deny"
    phases: dict[str, NetworkPhase] = Field(
        default_factory=lambda: {"setup": NetworkPhase(), "agent": NetworkPhase()}
    )
    initial_phase: str = "agent"
    dns: Literal["allowlist", "deny"] = "allowlist"
    dns_upstream: str | None = None
    allow_private: bool = False

    @model_validator(mode="after")
    def _phase_exists(self) -> NetworkPolicy:
        if self.initial_phase not in self.phases:
            known = ", ".join(sorted(self.phases)) or "none"
            raise ValueError(f"initial_phase {self.initial_phase!r} is not a phase (have: {known})")
        return self
