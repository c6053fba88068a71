"""``Finding``: what a rule or a detector says about an event, before policy applies.

The engine turns findings into Verdicts by adding attribution, the policy hash and
the action the policy's ``response:`` section maps the severity to. Rule matches
from ``bastion.rules`` (``RuleMatch``) have the same shape and are used as-is; this
module only spells that shape out for the stateful detectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import Action, Event, EventKind, Severity

__all__ = ["Detector", "Finding", "MatchLike", "RuleSetLike"]


class MatchLike(Protocol):
    """What the engine reads from a rule match or a detector finding."""

    rule_id: str
    severity: Severity
    message: str
    categories: tuple[str, ...] | list[str]
    mitre: tuple[str, ...] | list[str]
    action: Action | None
    evidence: Mapping[str, Any]


class RuleSetLike(Protocol):
    """The compiled rule packs (``bastion.rules.RuleSet``) as the engine uses them."""

    policy_hash: str

    def match(self, event: Event) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector result. ``event_ids`` names earlier events that contributed
    (the event being evaluated is always added by the engine)."""

    rule_id: str
    severity: Severity
    message: str
    categories: tuple[str, ...] = ()
    mitre: tuple[str, ...] = ()
    action: Action | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    event_ids: tuple[str, ...] = ()


class Detector(Protocol):
    """A stateful detector: sees only the event kinds it names, keeps its own state
    (keyed by session), returns findings. Must be thread-safe: sensors of several
    sessions evaluate concurrently."""

    name: str
    kinds: frozenset[EventKind]

    def observe(self, event: Event) -> list[Finding]: ...

    def forget(self, session_id: str) -> None: ...
