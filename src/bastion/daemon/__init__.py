"""The per-node bastion daemon (`bastion node`) and its clients.

A trainer drives hundreds of rollouts from one process; the sessions' sensors, gateway,
engine and audit trail should not live there. The daemon owns one node's sessions and
does all of that work; a trainer holds only thin handles that send a tool call and get
its ``ExecResult`` back over a local socket:

    trainer process                          bastion node (one per machine)
    ───────────────                          ──────────────────────────────
    NodeClient / AsyncNodeClient  ──unix──▶  NodeServer ─▶ Session ─▶ sandbox, sensors,
    RemoteSession.exec(...)       ◀──json──              engine, responder, audit

Every connection authenticates with a token the daemon writes (mode 0600) into its
state directory: the node's admin token, or a run token that may only open sessions of
its run. A session lives as long as the connection that opened it: a trainer that dies
leaves nothing running, and a daemon that dies is noticed by every handle at its next
call (``SessionBroken``, ``infra_failed``); the next daemon removes what it left.
"""

from __future__ import annotations

from .client import AsyncNodeClient, AsyncRemoteSession, NodeClient, NodeUnavailable, RemoteSession
from .protocol import PROTOCOL_VERSION, NodeAddress

__all__ = [
    "PROTOCOL_VERSION",
    "AsyncNodeClient",
    "AsyncRemoteSession",
    "NodeAddress",
    "NodeClient",
    "NodeUnavailable",
    "RemoteSession",
]
