"""``Engine``: rules and stateful detectors over Events, Verdicts out. Never acts.

The engine adds what findings lack: attribution (copied from the event, so a verdict
about a background process of call c3 noticed during c9 is charged to c3), the
policy's content hash, and the action the policy's ``response:`` section maps the
severity to, unless the rule or detector overrides it. The responder then records
what was actually done.

Rules come from a ``RuleSet`` (or a ``RuleSetHolder`` that reloads atomically); the
engine takes the holder's ``current`` set once per event and reads both the matches
and the policy hash from it, so a reload never splits an event between two rule
versions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..events import Action, Event, EventKind, Severity, Verdict
from ..policy.response import ResponsePolicy
from .finding import Detector, MatchLike, RuleSetLike

__all__ = ["Engine", "EngineStatistics"]


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """Immutable snapshot for metrics and benchmarks."""

    events: int
    verdicts: int
    detectors: tuple[str, ...]


class Engine:
    """Evaluates every event against the rules, then the detectors for its kind."""

    def __init__(
        self,
        ruleset: RuleSetLike,
        response: ResponsePolicy,
        detectors: Sequence[Detector] = (),
    ) -> None:
        self._ruleset = ruleset
        self._actions = {s: response.for_severity(str(s)) for s in Severity}
        self._detectors = tuple(detectors)
        by_kind: dict[EventKind, list[Detector]] = {}
        for detector in self._detectors:
            for kind in detector.kinds:
                by_kind.setdefault(kind, []).append(detector)
        self._by_kind = {k: tuple(v) for k, v in by_kind.items()}
        self._events = 0
        self._verdicts = 0
        self._count_lock = threading.Lock()

    @property
    def policy_hash(self) -> str:
        return self._ruleset.policy_hash

    @property
    def ruleset(self) -> RuleSetLike:
        return self._ruleset

    def evaluate(self, event: Event) -> list[Verdict]:
        # one snapshot per event: the matches and the hash must come from the same set
        ruleset = getattr(self._ruleset, "current", self._ruleset)
        matches: list[MatchLike] = ruleset.match(event)
        detectors = self._by_kind.get(event.kind)
        if detectors:
            for detector in detectors:
                found = detector.observe(event)
                if found:
                    matches = [*matches, *found]
        if event.kind is EventKind.LIFECYCLE and event.fields.get("life.state") == "closing":
            self.forget(event.session_id)
        self._events += 1  # a racy counter is fine for statistics
        if not matches:
            return []
        policy_hash = ruleset.policy_hash
        verdicts = [self._verdict(event, m, policy_hash) for m in matches]
        self._verdicts += len(verdicts)
        return verdicts

    def _verdict(self, event: Event, match: MatchLike, policy_hash: str) -> Verdict:
        action = match.action if match.action is not None else self._actions[match.severity]
        earlier: Iterable[str] = getattr(match, "event_ids", ())
        ids = tuple(dict.fromkeys((*earlier, event.id)))
        return Verdict(
            rule_id=match.rule_id,
            severity=match.severity,
            message=match.message,
            action=Action(action),
            categories=tuple(match.categories),
            mitre=tuple(match.mitre),
            event_ids=ids,
            policy_hash=policy_hash,
            session_id=event.session_id,
            run_id=event.run_id,
            episode_id=event.episode_id,
            step=event.step,
            call_id=event.call_id,
            pid=event.pid,
            evidence=dict(match.evidence),
        )

    def forget(self, session_id: str) -> None:
        """Drop detector state of a session that ended."""
        for detector in self._detectors:
            detector.forget(session_id)

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(self._events, self._verdicts,
                                tuple(d.name for d in self._detectors))
