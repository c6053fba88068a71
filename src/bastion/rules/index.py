"""Per-kind prefilter: find the few rules worth evaluating for one event.

Each rule contributes its guard (see ``compile.guard``): equality atoms go into a hash
table per field, substring atoms into one Aho-Corasick automaton per field (overlapping
matches, so a literal inside another literal is still found). A rule without a guard is
evaluated on every event of its kind. Candidates are then evaluated with the full
compiled condition in pack order, so the prefilter changes speed, never results.

ahocorasick-rs is optional: without it a plain ``in`` scan over the literals gives the
same candidates, slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..events import Event
from .compile import Atom, _getter

try:  # pragma: no cover - exercised by whichever variant is installed
    import ahocorasick_rs as _ac
except ImportError:  # pragma: no cover
    _ac = None

__all__ = ["KindIndex", "has_automaton"]


def has_automaton() -> bool:
    return _ac is not None


class _Guarded(Protocol):
    guard: frozenset[Atom] | None


class _Scanner:
    """Which of ``literals`` occur in a text (all of them, overlaps included)."""

    def __init__(self, literals: Sequence[str], use_automaton: bool = True) -> None:
        self.literals = list(literals)
        self._ac = _ac.AhoCorasick(self.literals) if (_ac is not None and use_automaton) else None

    def found(self, text: str) -> list[int]:
        if self._ac is not None:
            return [m[0] for m in self._ac.find_matches_as_indexes(text, overlapping=True)]
        return [i for i, lit in enumerate(self.literals) if lit in text]


class KindIndex:
    def __init__(self, rules: Sequence[Any], *, use_automaton: bool = True) -> None:
        self.rules = list(rules)
        self.always: list[int] = []
        eq: dict[str, dict[Any, list[int]]] = {}
        sub: dict[str, dict[str, list[int]]] = {}
        for i, rule in enumerate(self.rules):
            atoms = rule.guard
            if atoms is None:
                self.always.append(i)
                continue
            for kind, field, value in atoms:
                table = (eq if kind == "eq" else sub).setdefault(field, {})
                table.setdefault(value, []).append(i)
        self._eq = [(_getter(f), {v: tuple(ix) for v, ix in t.items()}) for f, t in eq.items()]
        self._sub = []
        for f, t in sub.items():
            lits = list(t)
            self._sub.append((_getter(f), _Scanner(lits, use_automaton), [tuple(t[x]) for x in lits]))

    def candidates(self, event: Event) -> list[int]:
        cand = set(self.always)
        for get, table in self._eq:
            v = get(event)
            if v is None:
                continue
            if isinstance(v, str):
                hit = table.get(v)
                if hit:
                    cand.update(hit)
            elif isinstance(v, (list, tuple, frozenset, set)):
                for x in v:
                    if isinstance(x, str):
                        hit = table.get(x)
                        if hit:
                            cand.update(hit)
        for get, scanner, owners in self._sub:
            v = get(event)
            if v is None:
                continue
            if isinstance(v, str):
                text = v.lower()
            elif isinstance(v, (list, tuple)):
                text = "\n".join(x for x in v if isinstance(x, str)).lower()
            else:
                continue
            for pi in scanner.found(text):
                cand.update(owners[pi])
        return sorted(cand)
