"""Build the engine a policy asks for: its rule packs plus the default detectors."""

from __future__ import annotations

from ..policy import Policy
from ..rules import load_ruleset
from .detectors import default_detectors
from .engine import Engine

__all__ = ["build_engine"]


def build_engine(policy: Policy) -> Engine:
    """One engine per session: detector state is per session and dies with it."""
    return Engine(load_ruleset(policy), policy.response,
                  default_detectors(policy.rules.detectors))
