"""Compiled rules, the per-event ``match``, and atomic reload."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import Action, Event, Severity
from .compile import Atom, Predicate
from .index import KindIndex

__all__ = ["Rule", "RuleMatch", "RuleSet", "RuleSetHolder", "RuleSetStatistics"]

_TEMPLATE_FIELD = re.compile(r"%%|%([A-Za-z_][A-Za-z0-9_.]*[A-Za-z0-9_]|[A-Za-z_])")
_EVIDENCE_MAX = 512


@dataclass(frozen=True)
class RuleMatch:
    """One rule that matched one event. The engine turns it into a Verdict."""

    rule_id: str
    severity: Severity
    message: str
    categories: tuple[str, ...] = ()
    mitre: tuple[str, ...] = ()
    action: Action | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Rule:
    """A compiled rule. ``predicate`` already includes the rule's exceptions."""

    id: str
    desc: str
    condition: str
    severity: Severity
    output: str
    predicate: Predicate
    kinds: frozenset[str]
    guard: tuple[tuple[frozenset[Atom], ...], ...] | None
    fields: tuple[str, ...]
    tags: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    mitre: tuple[str, ...] = ()
    maturity: str = "incubating"
    action: Action | None = None
    enabled: bool = True
    exceptions: tuple[str, ...] = ()
    tests: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    pack: str = ""
    file: str = ""
    line: int = 0
    node: Any = field(default=None, repr=False)
    exception_nodes: tuple[Any, ...] = field(default=(), repr=False)
    _render: Callable[[Event], str] | None = field(default=None, repr=False)

    def render(self, event: Event) -> str:
        if self._render is None:
            self._render = _template(self.output)
        return self._render(event)

    def to_match(self, event: Event) -> RuleMatch:
        evidence: dict[str, Any] = {}
        for name in self.fields:
            if name == "kind":
                continue
            value = event.get(name)
            if value is not None:
                evidence[name] = _clip(value)
        if event.kind.value == "command":
            payloads = event.fields.get("cmd.payloads")
            if payloads:
                evidence["cmd.payloads"] = _clip(payloads)
        return RuleMatch(self.id, self.severity, self.render(event), self.categories,
                         self.mitre, self.action, evidence)


def _clip(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= _EVIDENCE_MAX else value[:_EVIDENCE_MAX] + "…"
    if isinstance(value, (list, tuple)):
        return [_clip(v) for v in list(value)[:32]]
    return value


def _template(text: str) -> Callable[[Event], str]:
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _TEMPLATE_FIELD.finditer(text):
        parts.append(text[pos:m.start()])
        parts.append("%" if m.group() == "%%" else (m.group(1),))
        pos = m.end()
    parts.append(text[pos:])

    def render(event: Event) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
                continue
            v = event.get(p[0])
            if isinstance(v, (list, tuple)):
                v = " | ".join(str(x) for x in v)
            s = "<NA>" if v is None else str(v)
            out.append(s if len(s) <= 200 else s[:200] + "…")
        return "".join(out)

    return render


@dataclass(frozen=True)
class RuleSetStatistics:
    """Immutable snapshot for metrics and benchmarks."""

    rules_total: int
    rules_enabled: int
    rules_by_kind: Mapping[str, int]
    unguarded_by_kind: Mapping[str, int]
    packs: tuple[str, ...]
    events: int
    matches: int
    substring_automaton: bool


class RuleSet:
    """All rules of one policy, compiled and indexed by event kind. Immutable once built."""

    def __init__(self, rules: Sequence[Rule], *, policy_hash: str,
                 packs: Sequence[str] = (), use_automaton: bool = True) -> None:
        self.rules: list[Rule] = list(rules)
        self.policy_hash = policy_hash
        self.packs = tuple(packs)
        self._by_id = {r.id: r for r in self.rules}
        by_kind: dict[str, list[Rule]] = {}
        for rule in self.rules:
            if not rule.enabled:
                continue
            for kind in sorted(rule.kinds):
                by_kind.setdefault(kind, []).append(rule)
        self._index = {k: KindIndex(v, use_automaton=use_automaton) for k, v in by_kind.items()}
        self._use_automaton = use_automaton
        self._events = 0
        self._matches = 0

    def rule(self, rule_id: str) -> Rule:
        return self._by_id[rule_id]

    def match(self, event: Event) -> list[RuleMatch]:
        """Every enabled rule whose condition holds for ``event``, in pack order."""
        self._events += 1
        # ``_value_`` is the plain attribute behind Enum.value (the property is slow).
        index = self._index.get(event.kind._value_)
        if index is None:
            return []
        cand = index.candidates(event)
        if not cand:
            return []
        rules = index.rules
        out = [rules[i].to_match(event) for i in cand if rules[i].predicate(event)]
        if out:
            self._matches += len(out)
        return out

    def matching_rule_ids(self, event: Event) -> list[str]:
        """Like ``match`` without rendering (for tests and bulk evaluation)."""
        index = self._index.get(event.kind._value_)
        if index is None:
            return []
        rules = index.rules
        return [rules[i].id for i in index.candidates(event) if rules[i].predicate(event)]

    def statistics(self) -> RuleSetStatistics:
        return RuleSetStatistics(
            rules_total=len(self.rules),
            rules_enabled=sum(1 for r in self.rules if r.enabled),
            rules_by_kind={k: len(ix.rules) for k, ix in sorted(self._index.items())},
            unguarded_by_kind={k: len(ix.always) for k, ix in sorted(self._index.items())},
            packs=self.packs,
            events=self._events,
            matches=self._matches,
            substring_automaton=self._use_automaton and _automaton_available(),
        )


def _automaton_available() -> bool:
    from .index import has_automaton

    return has_automaton()


class RuleSetHolder:
    """The current RuleSet, replaceable atomically.

    A reload compiles the new set completely *before* taking the lock, then swaps one
    reference; readers take the reference once per event (``current`` or ``match``), so
    they see either the old set or the new one, never a mix. A failed reload raises and
    leaves the old set in place.
    """

    def __init__(self, ruleset: RuleSet) -> None:
        self._lock = threading.Lock()
        self._current = ruleset
        self._generation = 0

    @property
    def current(self) -> RuleSet:
        return self._current

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def policy_hash(self) -> str:
        return self._current.policy_hash

    def match(self, event: Event) -> list[RuleMatch]:
        return self._current.match(event)

    def swap(self, ruleset: RuleSet) -> RuleSet:
        """Install ``ruleset``; return the one it replaced."""
        with self._lock:
            old, self._current = self._current, ruleset
            self._generation += 1
            return old

    def reload(self, policy: Any) -> RuleSet:
        """Build from ``policy`` (raises PolicyError, keeping the old set) and swap."""
        from .loader import load_ruleset

        new = load_ruleset(policy)
        self.swap(new)
        return new
