"""Per-kind prefilter: find the few rules worth evaluating for one event.

Each rule contributes its guard (see ``compile.guard``): equality atoms go into a hash
table per field; substring atoms of every field go into one Aho-Corasick automaton run
once over the lower-cased scanned text (overlapping matches, so a literal inside
another literal is still found; fields another field covers are not scanned twice,
see ``fields.SCAN_VIA``). A rule without a guard is evaluated on every event of its
kind. Candidates are then evaluated with the full compiled condition in pack order, so
the prefilter changes speed, never results.

ahocorasick-rs is optional: without it a plain ``in`` scan over the literals gives the
same candidates, slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from ..events import Event
from .compile import ATTRIBUTE_FIELDS, _getter
from .fields import SCAN_VIA

try:  # pragma: no cover - exercised by whichever variant is installed
    import ahocorasick_rs as _ac
except ImportError:  # pragma: no cover
    _ac = None

__all__ = ["KindIndex", "has_automaton"]


def has_automaton() -> bool:
    return _ac is not None


def _fetch(name: str) -> Any:
    """None for plain fields (read straight from ``event.fields``), else a getter."""
    return _getter(name) if name in ATTRIBUTE_FIELDS or name == "kind" else None


_SEQUENCES = (list, tuple, frozenset, set)


class _Scanner:
    """Which of ``literals`` occur in a text (all of them, overlaps included)."""

    def __init__(self, literals: Sequence[str], use_automaton: bool = True) -> None:
        self.literals = list(literals)
        self._ac = _ac.AhoCorasick(self.literals) if (_ac is not None and use_automaton) else None

    def raw_hits(self, text: str) -> list[tuple[int, int, int]]:
        """(literal index, start, end) for every occurrence, overlaps included."""
        if self._ac is not None:
            return self._ac.find_matches_as_indexes(text, overlapping=True)
        return [(i, 0, 0) for i, lit in enumerate(self.literals) if lit in text]



class KindIndex:
    """Prefilter for one event kind.

    Each rule's guard is a few alternatives of a few clauses (see ``compile.guard``); an
    atom that holds marks its clause, and a rule becomes a candidate when every clause of
    one of its alternatives is marked.
    """

    def __init__(self, rules: Sequence[Any], *, use_automaton: bool = True) -> None:
        self.rules = list(rules)
        self.always: list[int] = []
        eq: dict[str, dict[Any, list[tuple[int, int]]]] = {}
        sub: dict[str, dict[str, list[tuple[int, int]]]] = {}
        self._alts: list[tuple[int, ...]] = []
        for i, rule in enumerate(self.rules):
            alternatives = rule.guard
            if not alternatives:
                self.always.append(i)
                self._alts.append(())
                continue
            masks = []
            bit = 0
            if len(alternatives) == 1 and len(alternatives[0]) == 1:
                # One clause: any of its atoms makes the rule a candidate outright.
                for kind, field, value in alternatives[0][0]:
                    table = (eq if kind == "eq" else sub).setdefault(field, {})
                    table.setdefault(value, []).append((i, 0))
                self._alts.append((0,))
                continue
            for clauses in alternatives:
                mask = 0
                for clause in clauses:
                    for kind, field, value in clause:
                        table = (eq if kind == "eq" else sub).setdefault(field, {})
                        table.setdefault(value, []).append((i, 1 << bit))
                    mask |= 1 << bit
                    bit += 1
                masks.append(mask)
            self._alts.append(tuple(masks))
        # Most rules have one alternative: test its mask without a generator.
        self._single = [alts[0] if len(alts) == 1 else -1 for alts in self._alts]
        self._eq = [(f, _fetch(f), {v: tuple(ix) for v, ix in t.items()})
                    for f, t in eq.items()]
        # One automaton over every substring literal; the haystack is the lower-cased
        # concatenation of the scanned fields (fields covered by another are skipped).
        owners: dict[str, set[tuple[int, int]]] = {}
        scanned: list[str] = []
        for f, t in sub.items():
            target = SCAN_VIA.get(f, f)
            if target not in scanned:
                scanned.append(target)
            for lit, ix in t.items():
                owners.setdefault(lit, set()).update(ix)
        lits = list(owners)
        self._scan_fields = [(f, _fetch(f)) for f in scanned]
        self._scanner = _Scanner(lits, use_automaton) if lits else None
        self._owners = [tuple(sorted(owners[x])) for x in lits]
        self._single_scan = (scanned[0] if len(scanned) == 1 and self._scan_fields[0][1] is None
                             else None)
        self._find = None
        if self._scanner is not None:
            ac = self._scanner._ac
            self._find = (partial(ac.find_matches_as_indexes, overlapping=True)
                          if ac is not None else self._scanner.raw_hits)

    def candidates(self, event: Event) -> list[int]:
        """Indexes (pack order) of the rules whose guard holds for ``event``."""
        marks: dict[int, int] = {}
        direct: set[int] = set()
        fields = event.fields
        for name, get, table in self._eq:
            v = fields.get(name) if get is None else get(event)
            if not v:
                continue
            if v.__class__ is str:
                hit = table.get(v)
                if hit:
                    for i, bit in hit:
                        if bit:
                            marks[i] = marks.get(i, 0) | bit
                        else:
                            direct.add(i)
            elif v.__class__ in _SEQUENCES:
                try:
                    for x in v:
                        hit = table.get(x)
                        if hit:
                            for i, bit in hit:
                                if bit:
                                    marks[i] = marks.get(i, 0) | bit
                                else:
                                    direct.add(i)
                except TypeError:  # an unhashable element cannot equal a literal
                    pass
        find = self._find
        if find is not None:
            if self._single_scan is not None:
                v = fields.get(self._single_scan)
                if v.__class__ in _SEQUENCES:
                    v = "\n".join([x for x in v if x.__class__ is str])
                text = v.lower() if v.__class__ is str else ""
            else:
                parts = []
                for name, get in self._scan_fields:
                    v = fields.get(name) if get is None else get(event)
                    if v is None:
                        continue
                    if v.__class__ is str:
                        parts.append(v)
                    elif v.__class__ is list:
                        parts.extend(v)  # analyser lists hold only strings
                    elif v.__class__ in _SEQUENCES:
                        parts.extend(x for x in v if x.__class__ is str)
                try:
                    text = "\n".join(parts).lower()
                except TypeError:  # a non-string element in a list field
                    text = "\n".join(x for x in parts if x.__class__ is str).lower()
            if text:
                owners = self._owners
                # The automaton's raw (index, start, end) hits; repeats are harmless.
                for hit in find(text):
                    for i, bit in owners[hit[0]]:
                        if bit:
                            marks[i] = marks.get(i, 0) | bit
                        else:
                            direct.add(i)
        if marks:
            single = self._single
            for i, m in marks.items():
                a = single[i]
                if a >= 0:
                    if m & a == a:
                        direct.add(i)
                elif any(m & x == x for x in self._alts[i]):
                    direct.add(i)
        if self.always:
            direct.update(self.always)
        if not direct:
            return []
        return sorted(direct) if len(direct) > 1 else list(direct)
