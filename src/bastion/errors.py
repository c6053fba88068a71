"""bastion's error tree: few errors, each with one meaning.

    BastionError
    ├── PolicyError          a policy or rule file is wrong (names file, line, key)
    ├── SandboxUnavailable   the host cannot provide a sandbox (missing tool, no root, ...)
    ├── SessionClosed        the caller closed the session and then used it
    ├── SessionBroken        the session died under the caller (killed, terminated,
    │                        its audit trail failed, a sensor failed): it refuses work
    └── InternalError        a bug in bastion

A command that fails, times out or is denied is *not* an error: it is an ExecResult.
"""

from __future__ import annotations

__all__ = [
    "BastionError",
    "InternalError",
    "PolicyError",
    "SandboxUnavailable",
    "SessionBroken",
    "SessionClosed",
]


class BastionError(Exception):
    """Base of every error bastion raises on purpose."""


class PolicyError(BastionError):
    """A policy, rule pack or override is invalid. Says where, precisely."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.reason = message
        where = file or "<policy>"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        prefix = f"{where}: " if (file or line is not None) else ""
        keypart = f"{key}: " if key else ""
        super().__init__(f"{prefix}{keypart}{message}")


class SandboxUnavailable(BastionError):
    """The host cannot run a sandbox as configured. The message says how to fix it."""


class SessionClosed(BastionError):
    """The session was closed by its owner and cannot be used any more."""


class SessionBroken(BastionError):
    """The session ended on its own (terminated by policy, crashed, audit failure)."""


class InternalError(BastionError):
    """A bug in bastion. Please report it with the audit trail."""
