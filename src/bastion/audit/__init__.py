"""The audit trail: every event, verdict, action, lifecycle change and policy version of
a run, in order, hash-chained, signed and checkpointed outside the database.

    trail = open_trail(state_dir, run_id)      # the EventRecorder a Session uses
    trail.append_event(event)                  # returns once durable, or raises AuditError
    verify_state_dir(state_dir)                # OK, or the first bad record and its kind

Internal layout: ``chain`` (encoding, hashes), ``keys``, ``checkpoint`` (signed
notes), ``sinks`` (where checkpoints are exported), ``store`` (SQLite), ``trail``
(writer, group commit), ``verify``, ``reader`` (export, incidents, episodes),
``report`` / ``html`` (episode reports), ``replay``.
"""

from __future__ import annotations

from .checkpoint import Checkpoint as Checkpoint
from .errors import AuditError as AuditError
from .sinks import DirectorySink as DirectorySink
from .sinks import HttpSink as HttpSink
from .trail import AuditTrail as AuditTrail
from .trail import Ticket as Ticket
from .trail import TrailConfig as TrailConfig
from .trail import TrailStatistics as TrailStatistics
from .trail import lease_trail as lease_trail
from .trail import open_trail as open_trail
from .trail import release_trail as release_trail
from .verify import Problem as Problem
from .verify import RunVerification as RunVerification
from .verify import verify_run as verify_run
from .verify import verify_state_dir as verify_state_dir

__all__ = [
    "AuditError",
    "AuditTrail",
    "Checkpoint",
    "DirectorySink",
    "HttpSink",
    "Problem",
    "RunVerification",
    "Ticket",
    "TrailConfig",
    "TrailStatistics",
    "lease_trail",
    "open_trail",
    "release_trail",
    "verify_run",
    "verify_state_dir",
]
