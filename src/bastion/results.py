"""What a tool call returns. A failed, denied or killed command is a result, not an error."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import Verdict

__all__ = ["EXEC_RESULT_SCHEMA_VERSION", "ExecResult", "Outcome"]

# Version of the JSON form below (`bastion run --json`). Bump on any incompatible change.
EXEC_RESULT_SCHEMA_VERSION = 1


class Outcome(str, enum.Enum):
    OK = "ok"  # ran and exited 0
    EXIT_NONZERO = "exit_nonzero"  # ran and exited with another status
    TIMEOUT = "timeout"  # killed at the call's timeout
    DENIED = "denied"  # refused before it ran (policy)
    KILLED = "killed"  # killed while running (policy verdict or resource limit)
    TERMINATED = "terminated"  # the session was ended (episode over)


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int  # shell convention: 128 + signal number when killed by a signal
    duration: float
    timed_out: bool
    outcome: Outcome
    call_id: str
    step: int | None = None
    signal: int | None = None
    truncated: bool = False
    reason: str | None = None  # why it was denied / killed / terminated, for the agent
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": EXEC_RESULT_SCHEMA_VERSION,
            "call_id": self.call_id,
            "step": self.step,
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "timed_out": self.timed_out,
            "duration": round(self.duration, 6),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "truncated": self.truncated,
            "reason": self.reason,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecResult:
        """The inverse of ``to_dict`` (results that crossed a process boundary: the
        node daemon's clients)."""
        return cls(
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            exit_code=int(data["exit_code"]),
            duration=float(data.get("duration", 0.0)),
            timed_out=bool(data.get("timed_out", False)),
            outcome=Outcome(data["outcome"]),
            call_id=str(data["call_id"]),
            step=data.get("step"),
            signal=data.get("signal"),
            truncated=bool(data.get("truncated", False)),
            reason=data.get("reason"),
            verdicts=[Verdict.from_dict(v) for v in data.get("verdicts", ())],
        )
