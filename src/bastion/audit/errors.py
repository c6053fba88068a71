"""The audit trail's one error: something could not be recorded (or read back) safely.

It is a ``BastionError`` so that ``Session.ingest`` treats it like every other bastion
failure: the session is terminated and the error re-raised. An audit failure is never
logged and skipped, because an event that cannot be recorded must not be acted upon.
"""

from __future__ import annotations

from ..errors import BastionError

__all__ = ["AuditError"]


class AuditError(BastionError):
    """An append, checkpoint export or read of the audit trail failed."""
