"""A minimal server-sent-events reader over httpx for the tests (the wire format:
``event:``/``data:``/``id:`` lines, a blank line ends an event, ``:`` lines are
comments/pings)."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class SSEFollower:
    """Follows a stream on a thread; ``next(timeout)`` returns the next event."""

    def __init__(self, url: str, token: str, params: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[SSEEvent] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=60))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, token, params or {}),
                                        daemon=True)
        self.status: int | None = None
        self._thread.start()

    def _run(self, url: str, token: str, params: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, params=params,
                                     headers={"Authorization": f"Bearer {token}"}) as r:
                self.status = r.status_code
                event, data, ident = "message", [], None
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if data:
                            self.events.put(SSEEvent(event, "\n".join(data), ident))
                        event, data, ident = "message", [], None
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            event = value
                        elif name == "data":
                            data.append(value)
                        elif name == "id":
                            ident = value
        except httpx.HTTPError:
            return

    def next(self, timeout: float = 30.0, *, kind: str | None = None) -> SSEEvent:
        while True:
            event = self.events.get(timeout=timeout)
            if kind is None or event.event == kind:
                return event

    def close(self) -> None:
        self._stop.set()
        self._client.close()
