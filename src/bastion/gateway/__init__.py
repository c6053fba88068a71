"""The egress gateway: every byte that leaves a session passes through here.

``attach_network(view, sink, lab=...)`` is the seam between sessions and the network:
it returns a ``NetworkAttachment`` (the session's network namespace, its phase switch,
the cut of one live connection and its teardown) or raises: a session never runs with
an unfiltered network. Like the sensors, the gateway holds the session's read-only view
and its event sink, never the session.

Every session gets a namespace wired to this process's gateway (``server.Gateway``):
TCP is classified and decided before anything is dialled, DNS answers only allowed
names, everything else is dropped and counted. Sessions created with ``lab=True`` reach
the simulated internet of ``bastion.lab`` instead of the host's network; if the lab is
not up that is an error, never a silent fallback to the real network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..contracts import EventSink, Watched
from ..errors import SandboxUnavailable

__all__ = ["NetworkAttachment", "attach_network"]


class NetworkAttachment(Protocol):
    """A session's connection to the gateway."""

    @property
    def netns_path(self) -> str:
        """Path of the network namespace the sandbox runs in (/run/netns/...)."""
        ...

    def set_phase(self, phase: str) -> None: ...

    def cut(self, conn_id: str) -> bool:
        """Close one live connection; False if it is not open."""
        ...

    def record_pending(self) -> None:
        """Report connections still being classified (the session is about to close)."""
        ...

    def close(self) -> None: ...

    @property
    def ca_bundle(self) -> Path | None:
        """The CA bundle the sandbox must trust (system CAs + the gateway's interception
        CA) when its TLS is inspected; None when it is not."""
        ...


def attach_network(view: Watched, sink: EventSink, *, lab: bool = False) -> NetworkAttachment:
    """Give the session its own namespace behind the gateway; raises SandboxUnavailable
    when that cannot be done (fail closed: a session never runs with an unfiltered
    network). ``lab`` reaches the simulated internet of ``bastion lab`` instead."""
    from .server import Gateway
    from .upstream import Upstream, system_nameserver

    network = view.policy.network
    if lab:
        from ..lab import Lab
        from ..lab.topology import DNS_IP

        lab = Lab()
        if not lab.is_up():
            raise SandboxUnavailable(f"the lab {lab.name!r} is not up (run `bastion lab up`)")
        upstream = Upstream(dns=(DNS_IP, 53), netns=lab.netns_path, label=f"lab:{lab.name}",
                            ca_files=(str(lab.ca_path),))
    else:
        upstream = Upstream(dns=_dns_upstream(network.dns_upstream) or system_nameserver())
    return Gateway.get().attach(view, sink, upstream)


def _dns_upstream(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    address, _, port = value.partition(":")
    return address, int(port or 53)
