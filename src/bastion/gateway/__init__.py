"""The egress gateway: every byte that leaves a session passes through here.

``attach_network(session)`` is the seam between sessions and the network: it returns a
``NetworkAttachment`` (the session's network namespace, its phase switch and its
teardown) or None, in which case the sandbox gets a private namespace with loopback
only and nothing can leave it at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

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
    """Loopback only: the session's sandbox gets its own empty network namespace."""
    return None
