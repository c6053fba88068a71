"""The egress gateway: every byte that leaves a session passes through here.

``attach_network(session)`` is the seam between sessions and the network: it returns a
``NetworkAttachment`` (the session's network namespace, its phase switch and its
teardown) or None, in which case the sandbox gets a private namespace with loopback
only and nothing can leave it at all.

Every session gets a namespace wired to this process's gateway (``server.Gateway``):
TCP is classified and decided before anything is dialled, DNS answers only allowed
names, everything else is dropped and counted. Sessions created with ``lab=True`` reach
the simulated internet of ``bastion.lab`` instead of the host's network; if the lab is
not up that is an error, never a silent fallback to the real network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..errors import SandboxUnavailable

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["NetworkAttachment", "attach_network"]


class NetworkAttachment(Protocol):
    """A session's connection to the gateway."""

    @property
    def netns_path(self) -> str:
        """Path of the network namespace the sandbox runs in (/run/netns/...)."""
        ...

    def set_phase(self, phase: str) -> None: ...

    def close(self) -> None: ...


def attach_network(session: Session) -> NetworkAttachment | None:
    """Give ``session`` its own namespace behind the gateway; raises SandboxUnavailable
    when that cannot be done (fail closed: a session never runs with an unfiltered
    network)."""
    from .server import Gateway
    from .upstream import Upstream, system_nameserver

    network = session.policy.network
    if session.lab:
        from ..lab import Lab
        from ..lab.topology import DNS_IP

        lab = Lab()
        if not lab.is_up():
            raise SandboxUnavailable(f"the lab {lab.name!r} is not up (run `bastion lab up`)")
        upstream = Upstream(dns=(DNS_IP, 53), netns=lab.netns_path, label=f"lab:{lab.name}")
    else:
        upstream = Upstream(dns=_dns_upstream(network.dns_upstream) or system_nameserver())
    return Gateway.get().attach(session, upstream)


def _dns_upstream(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    address, _, port = value.partition(":")
    return address, int(port or 53)
