"""Waiting for a file descriptor with poll(2), never select(2): select cannot watch
descriptors numbered 1024 or more, which a process holding many sessions has."""

from __future__ import annotations

import select
from typing import Protocol

__all__ = ["wait_readable"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def wait_readable(fd: int | _HasFileno, timeout: float) -> bool:
    """True when ``fd`` is readable within ``timeout`` seconds."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        return bool(poller.poll(max(0.0, timeout) * 1000))
    except InterruptedError:
        return False
