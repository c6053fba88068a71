"""Shared by the cluster tests: a recorder that keeps what it forwards, an agent to
kill mid-episode, and a process-liveness check. Pickled by value into Ray workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class Collecting:
    """Forwards to the run's audit trail and keeps what it saw, for assertions."""

    def __init__(self, trail):
        self.trail = trail
        self.events = []
        self.verdicts = []

    def append_event(self, event):
        self.trail.append_event(event)
        self.events.append(event)

    def append_verdict(self, verdict):
        self.trail.append_verdict(verdict)
        self.verdicts.append(verdict)

    def flush(self):
        self.trail.flush(checkpoint=True)


@dataclass
class Sleeper:
    """Starts a background process, then blocks: something to kill mid-episode."""

    name: str = "sleeper"
    stage_steps: dict[str, int] = field(default_factory=dict)
    _n: int = 0

    def reset(self) -> None:
        self._n = 0

    def act(self, observation, reward, info):
        self._n += 1
        return "nohup sleep 300 >/dev/null 2>&1 & sleep 300" if self._n == 1 else "true"


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@dataclass
class Slow:
    """An honest agent whose calls take a while: something in flight on every node
    when one of them is killed."""

    name: str = "slow"
    stage_steps: dict[str, int] = field(default_factory=dict)
    _n: int = 0

    def reset(self) -> None:
        self._n = 0

    def act(self, observation, reward, info):
        self._n += 1
        if self._n <= 3:
            return f"sleep 1.5; echo step{self._n} >> progress.txt"
        return '{"tool": "submit"}'
