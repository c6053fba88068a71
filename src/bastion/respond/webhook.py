"""Alert delivery: verdict JSON POSTed to the policy's webhook URL.

Delivery runs on one background thread so that a slow receiver never stalls a
sensor. A failed delivery is not dropped silently: it is reported back through the
``on_failure`` callback, which the responder turns into a telemetry event in the
session's audit trail.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

__all__ = ["WebhookSender"]

_TIMEOUT = 5.0
_Item = tuple[Mapping[str, Any], Callable[[str], None]]


class WebhookSender:
    def __init__(self, url: str, *, timeout: float = _TIMEOUT) -> None:
        if urlparse(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self._timeout = timeout
        self._queue: queue.Queue[_Item | threading.Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="bastion-webhook", daemon=True)
        self._thread.start()
        self.sent = 0

    def send(self, payload: Mapping[str, Any], on_failure: Callable[[str], None]) -> None:
        self._queue.put((payload, on_failure))

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far was attempted (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            payload, on_failure = item
            try:
                self._post(payload)
                self.sent += 1
            except (OSError, urllib.error.URLError, ValueError) as exc:
                on_failure(f"alert to {self.url} failed: {exc}")

    def _post(self, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "bastion"})
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            if response.status >= 300:
                raise ValueError(f"HTTP {response.status}")
