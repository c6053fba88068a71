"""Responses to verdicts (internal; ``Responder`` is the entry point).

Layering: ``kill`` (pid-safe process-tree kill), ``quarantine`` (evidence copy) and
``webhook`` (alert delivery) are the mechanisms; ``responder`` maps actions onto them.
"""

from __future__ import annotations

from .responder import ConnectionCutter as ConnectionCutter
from .responder import Responder as Responder

__all__ = ["ConnectionCutter", "Responder"]
