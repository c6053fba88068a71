"""Fan-out of new verdict and action records to live-stream (SSE) clients.

The poller reads the trail on a worker thread and hands each batch to ``publish`` on
the event loop, which puts each record on the queue of every client whose filter
matches. A client that falls ``queue_size`` records behind is not slowed down for,
nor silently skipped: its queue gets a final ``dropped`` marker, the count goes to
``/metrics``, and the client is disconnected (it can reconnect and re-read the gap
from the REST API by position).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..audit.reader import Record

__all__ = ["DROPPED", "Broadcaster", "Subscriber"]

DROPPED = object()


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[object]
    accepts: Callable[[Record], bool]
    dead: bool = False


class Broadcaster:
    """Owned by the event loop: every method runs on the loop's thread."""

    def __init__(self, queue_size: int = 10_000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self.delivered = 0  # queued for a client
        self.dropped = 0  # not queued: the client was too far behind
        self.undelivered = 0  # queued, but the client's stream ended before it was sent

    def subscribe(self, accepts: Callable[[Record], bool]) -> Subscriber:
        sub = Subscriber(asyncio.Queue(self.queue_size + 1), accepts)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """A stream ended (the client left, or could not take what was sent within the
        send timeout): what was still queued for it is counted as undelivered."""
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            self.undelivered += sum(1 for item in _drain(sub.queue) if item is not DROPPED)

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def publish(self, records: list[Record]) -> None:
        for sub in list(self._subscribers):
            if sub.dead:
                continue
            for i, record in enumerate(records):
                if not sub.accepts(record):
                    continue
                if sub.queue.qsize() >= self.queue_size:
                    # one slot is kept for the marker, so this never raises
                    self.dropped += 1 + sum(1 for r in records[i + 1:]
                                            if sub.accepts(r))
                    sub.queue.put_nowait(DROPPED)
                    sub.dead = True
                    break
                sub.queue.put_nowait(record)
                self.delivered += 1


def _drain(queue: asyncio.Queue[object]) -> list[object]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
