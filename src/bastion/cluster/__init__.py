"""bastion on a Ray cluster: one node service per node owning that node's sessions.

``ClusterRun`` places episodes on nodes by resources and ships every event and
verdict back to the run's audit trail with attribution intact; a node service that
dies takes its sessions with it (fail closed) and the run is told; its episodes come
back ``infra_failed``. A trainer that runs its own agent loop drives sessions on the
nodes through ``RayRemoteSession`` handles (``ClusterRun.open_session``). Requires the
``cluster`` extra (ray); importing this package does not import ray.
"""

from __future__ import annotations

from .node import EpisodeSpec, NodeService
from .remote import RayRemoteSession
from .run import ClusterRun, EpisodeOutcome, NodeHandle, specs_for
from .shipping import ShippingRecorder, deliver

__all__ = [
    "ClusterRun",
    "EpisodeOutcome",
    "EpisodeSpec",
    "NodeHandle",
    "NodeService",
    "RayRemoteSession",
    "ShippingRecorder",
    "deliver",
    "specs_for",
]
