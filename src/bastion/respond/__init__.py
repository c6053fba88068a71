"""Responses to verdicts (internal; ``Responder`` is the entry point).

Layering: ``responder`` plans (verdict in, commands out, no I/O); the session carries
the commands out with the mechanisms here: ``kill`` (pid-safe process-tree kill),
``quarantine`` (evidence copy) and ``webhook`` (alert delivery).
"""

from __future__ import annotations

from .responder import Responder as Responder

__all__ = ["Responder"]
