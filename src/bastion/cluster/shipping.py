"""Records that travel from a node service back to the run's audit trail.

A session on a Ray node records into a ``ShippingRecorder``: every event and verdict
is kept, in order, as its JSON form (``to_dict``), until the driver drains it and
appends it to the run's trail with ``Event.from_dict``/``Verdict.from_dict``, so run,
episode, step, call and session ids arrive exactly as the node saw them. Draining is
frequent (the driver polls while episodes run), so a node that dies loses at most the
records of its last poll interval; the run is told when that happens.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Literal

from ..events import Event, Verdict
from ..contracts import EventRecorder

__all__ = ["Shipped", "ShippingRecorder", "deliver"]

Shipped = tuple[Literal["event", "verdict"], dict[str, Any]]


class ShippingRecorder:
    """``EventRecorder`` that buffers records for shipping. Thread-safe."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._buffer: list[Shipped] = []
        self._lock = threading.Lock()
        self.shipped = 0

    def append_event(self, event: Event) -> None:
        data = event.to_dict()
        with self._lock:
            self._buffer.append(("event", data))

    def append_verdict(self, verdict: Verdict) -> None:
        data = verdict.to_dict()
        with self._lock:
            self._buffer.append(("verdict", data))

    def append_policy(self, policy: Any, *, episode_id: str) -> None:
        """The policy text is recorded by the run's trail on the driver, not shipped."""

    def flush(self, *, checkpoint: bool = False) -> None:
        """Nothing to wait for on the node: records are durable once the driver has
        delivered them to the run's trail."""

    def drain(self) -> list[Shipped]:
        with self._lock:
            out, self._buffer = self._buffer, []
            self.shipped += len(out)
        return out


def deliver(records: Iterable[Shipped], recorder: EventRecorder) -> int:
    """Append shipped records to the run's recorder, in order. Raises whatever the
    recorder raises (an audit trail that cannot record stops the run)."""
    count = 0
    for kind, data in records:
        if kind == "event":
            recorder.append_event(Event.from_dict(data))
        else:
            recorder.append_verdict(Verdict.from_dict(data))
        count += 1
    return count
