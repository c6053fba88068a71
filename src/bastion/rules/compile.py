"""Turn a condition tree into one Python callable, and derive what the index needs.

Semantics, chosen so that a rule never fires on what it cannot see:

* A comparison on a field the event lacks (``None``) is false, including ``!=``;
  ``not (f = x)`` is true. ``f exists`` tests presence (for a list: non-empty).
* List-valued fields match when *any* element matches (``!=``: when none equals).
* ``contains``/``startswith``/``endswith``/``glob``/``regex``/``in_cidr`` with a
  parenthesised list match when any value matches. ``icontains`` ignores case.
* ``glob`` matches the whole value (fnmatch, case-sensitive); ``regex`` searches.
* ``in_cidr`` (CIDR membership) accepts networks and plain addresses.
* ``under`` / ``over`` compare *paths*: the value is at or below (``under``) or at or
  above (``over``) one of the listed paths, after both are resolved as the sandbox
  sees them (``~``, ``$HOME`` and relative paths are in the workspace, ``..`` folded).
  An empty list never matches (a policy without protected paths has no grader).

``guard(node)`` returns a *necessary* condition as a set of cheap atoms — ("eq", field,
value) or ("sub", field, lowercase literal) — at least one of which holds whenever the
node is true, or None when no such set exists. The index evaluates a rule only when one
of its atoms holds, which is what makes hundreds of rules cost a few microseconds.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..events import ATTRIBUTE_FIELDS as EVENT_ATTRIBUTES
from ..events import Event
from .condition import And, Cmp, ConditionSyntaxError, Node, Not, Or
from .fields import ALL_KINDS, field_type, implied_kinds

__all__ = ["Atom", "Predicate", "compile_node", "guard", "node_fields", "node_kinds"]

Predicate = Callable[[Event], bool]
Atom = tuple[str, str, Any]

# attribution names rules may use, read from the event itself (one list: events.py)
ATTRIBUTE_FIELDS = _ATTRIBUTES = frozenset(EVENT_ATTRIBUTES) - {"kind"}
_NUMERIC = {"int", "float"}


WORKSPACE = "/workspace"


@lru_cache(maxsize=65536)
def resolve_path(path: str) -> str:
    """A path as the sandbox resolves it: ``~``/``$HOME``/relative -> the workspace."""
    for home in ("~/", "$HOME/", "${HOME}/"):
        if path.startswith(home):
            path = WORKSPACE + "/" + path[len(home):]
            break
    else:
        if path in ("~", "$HOME", "${HOME}"):
            path = WORKSPACE
        elif not path.startswith("/"):
            path = WORKSPACE + "/" + path
    out = posixpath.normpath(path)
    return "/" + out.lstrip("/")


def _getter(name: str) -> Callable[[Event], Any]:
    if name == "kind":
        return lambda ev: ev.kind._value_
    if name in _ATTRIBUTES:
        return lambda ev: ev.get(name)
    return lambda ev: ev.fields.get(name)


def _convert(value: str, ftype: str, cmp: Cmp) -> Any:
    try:
        if ftype == "int":
            return int(value, 0)
        if ftype == "float":
            return float(value)
        if ftype == "bool":
            low = value.lower()
            if low not in ("true", "false"):
                raise ValueError(value)
            return low == "true"
    except ValueError:
        raise ConditionSyntaxError(
            f"{cmp.field} is {ftype}; {value!r} is not a valid {ftype}",
            cmp.value_offset, cmp.source,
        ) from None
    return value


@lru_cache(maxsize=65536)
def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _cmp(node: Cmp) -> Predicate:
    ftype = field_type(node.field) or "str"
    is_list = ftype == "list"
    get = _getter(node.field)
    op = node.op
    vals = node.values

    if op == "exists":
        if is_list:  # an empty list is "none": `cmd.hosts exists` means some host
            return lambda ev: bool(get(ev))
        return lambda ev: get(ev) is not None

    if op in ("<", "<=", ">", ">="):
        if ftype not in _NUMERIC:
            raise ConditionSyntaxError(
                f"'{op}' needs a numeric field; {node.field} is {ftype}", node.offset, node.source)
        bound = float(_convert(vals[0], "float", node))
        if op == "<":
            return lambda ev: (v := get(ev)) is not None and v < bound
        if op == "<=":
            return lambda ev: (v := get(ev)) is not None and v <= bound
        if op == ">":
            return lambda ev: (v := get(ev)) is not None and v > bound
        return lambda ev: (v := get(ev)) is not None and v >= bound

    if op in ("=", "!=", "in"):
        if not vals and op == "in":
            return lambda ev: False
        typed = frozenset(_convert(v, ftype if not is_list else "str", node) for v in vals)
        if is_list:
            def any_in(ev: Event) -> bool:
                v = get(ev)
                return v is not None and not typed.isdisjoint(v)
            if op == "!=":
                return lambda ev: (v := get(ev)) is not None and typed.isdisjoint(v)
            return any_in
        if op == "!=":
            (one,) = typed
            return lambda ev: (v := get(ev)) is not None and v != one
        if len(typed) == 1 and op == "=":
            (one,) = typed
            return lambda ev: get(ev) == one
        return lambda ev: get(ev) in typed

    if ftype in _NUMERIC or ftype == "bool":
        raise ConditionSyntaxError(
            f"'{op}' needs a string field; {node.field} is {ftype}", node.offset, node.source)

    test: Callable[[str], bool]
    if op in ("contains", "icontains"):
        lits = tuple(v.lower() for v in vals) if op == "icontains" else tuple(vals)
        fold = op == "icontains"
        test = _substring_test(lits, fold)
    elif op == "startswith":
        prefixes = tuple(vals)
        test = lambda s: s.startswith(prefixes)
    elif op == "endswith":
        suffixes = tuple(vals)
        test = lambda s: s.endswith(suffixes)
    elif op in ("glob", "regex"):
        sources = [fnmatch.translate(v) if op == "glob" else v for v in vals]
        compiled: list[re.Pattern[str]] = []
        if len(sources) > 2:
            # one alternation instead of a loop over patterns (globs are anchored by \Z),
            # compiled once: every `bastion check` and session start pays for this
            try:
                compiled = [re.compile("|".join(f"(?:{p})" for p in sources), re.DOTALL)]
            except re.error:  # a bad pattern, or inline flags that cannot be combined
                compiled = []
        if not compiled:
            for v, source in zip(vals, sources):
                try:
                    compiled.append(re.compile(source, re.DOTALL))
                except re.error as exc:
                    raise ConditionSyntaxError(
                        f"bad {op} {v!r}: {exc}", node.value_offset, node.source) from None
        pats = tuple(compiled)
        if op == "glob":
            test = (lambda s, p=pats[0]: p.match(s) is not None) if len(pats) == 1 else (
                lambda s: any(p.match(s) is not None for p in pats))
        else:
            test = (lambda s, p=pats[0]: p.search(s) is not None) if len(pats) == 1 else (
                lambda s: any(p.search(s) is not None for p in pats))
    elif op in ("under", "over"):
        roots = tuple(resolve_path(v) for v in vals if v)
        if not roots:
            return lambda ev: False
        if op == "under":
            def test(s: str) -> bool:
                p = resolve_path(s)
                return any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)
        else:
            def test(s: str) -> bool:
                p = resolve_path(s)
                return any(r == p or r.startswith(p.rstrip("/") + "/") for r in roots)
    elif op == "in_cidr":
        try:
            nets = tuple(ipaddress.ip_network(v, strict=False) for v in vals)
        except ValueError as exc:
            raise ConditionSyntaxError(f"bad network: {exc}", node.value_offset,
                                       node.source) from None

        def test(s: str) -> bool:
            addr = _ip(s)
            return addr is not None and any(addr in n for n in nets)
    else:  # pragma: no cover - the parser only produces known operators
        raise ConditionSyntaxError(f"unknown operator {op!r}", node.offset, node.source)

    if is_list:
        return lambda ev: (v := get(ev)) is not None and any(test(x) for x in v)
    return lambda ev: (v := get(ev)) is not None and test(v)


def _substring_test(lits: tuple[str, ...], fold: bool) -> Callable[[str], bool]:
    """Any of ``lits`` in the string: one automaton pass when there are many."""
    if len(lits) >= 4:
        try:
            import ahocorasick_rs
        except ImportError:  # pragma: no cover - optional accelerator
            ahocorasick_rs = None
        if ahocorasick_rs is not None:
            ac = ahocorasick_rs.AhoCorasick(list(lits))
            find = ac.find_matches_as_indexes
            if fold:
                return lambda s: bool(find(s.lower()))
            return lambda s: bool(find(s))
    if len(lits) == 1:
        (one,) = lits
        if fold:
            return lambda s: one in s.lower()
        return lambda s: one in s
    if fold:
        def folded(s: str) -> bool:
            low = s.lower()
            return any(a in low for a in lits)
        return folded
    return lambda s: any(a in s for a in lits)


def compile_node(node: Node) -> Predicate:
    if isinstance(node, Cmp):
        return _cmp(node)
    if isinstance(node, Not):
        inner = compile_node(node.item)
        return lambda ev: not inner(ev)
    fns = [compile_node(n) for n in node.items]
    return _chain(fns, isinstance(node, And))


def _chain(fns: list[Predicate], conjunction: bool) -> Predicate:
    """Nested two-way closures: cheaper per call than all()/any() over a generator."""
    if len(fns) == 1:
        return fns[0]
    a = fns[0]
    b = _chain(fns[1:], conjunction)
    if conjunction:
        return lambda ev: a(ev) and b(ev)
    return lambda ev: a(ev) or b(ev)


def node_fields(node: Node) -> list[str]:
    """Every field the node reads, in first-use order."""
    out: dict[str, None] = {}

    def walk(n: Node) -> None:
        if isinstance(n, Cmp):
            out.setdefault(n.field)
        elif isinstance(n, Not):
            walk(n.item)
        else:
            for i in n.items:
                walk(i)

    walk(node)
    return list(out)


def node_kinds(node: Node) -> frozenset[str]:
    """The event kinds on which the node can be true (a superset)."""
    if isinstance(node, Cmp):
        if node.field == "kind" and node.op in ("=", "in"):
            return frozenset(node.values) & ALL_KINDS
        return ALL_KINDS if node.field == "kind" else implied_kinds(node.field)
    if isinstance(node, Not):
        return ALL_KINDS
    parts = [node_kinds(n) for n in node.items]
    if isinstance(node, And):
        # An explicit kind restriction narrows; otherwise the union of implied kinds.
        explicit = [node_kinds(n) for n in node.items
                    if isinstance(n, Cmp) and n.field == "kind" and n.op in ("=", "in")]
        if explicit:
            result = ALL_KINDS
            for e in explicit:
                result &= e
            return result
        union: frozenset[str] = frozenset()
        for p in parts:
            if p != ALL_KINDS:
                union |= p
        return union or ALL_KINDS
    union = frozenset()
    for p in parts:
        union |= p
    return union


def regex_literals(pattern: str) -> frozenset[str] | None:
    """Literal strings, one of which every match of ``pattern`` must contain (or None).

    Walks the parsed regex: the longest run of plain characters in the top-level
    sequence, or, failing that, a required group/alternation whose branches each have
    one. Case is folded, since the index compares lower-cased text.
    """
    try:
        from re import _parser as sre_parse  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - Python < 3.11
        import sre_parse  # type: ignore[no-redef]
    try:
        parsed = sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - the compiler reports bad patterns with positions
        return None
    return _seq_literals(list(parsed), sre_parse)


def _seq_literals(items: list, sp: Any) -> frozenset[str] | None:
    best_run = ""
    run: list[str] = []
    groups: list[frozenset[str]] = []
    for op, av in [*items, (None, None)]:
        if op is sp.LITERAL:
            run.append(chr(av))
            continue
        if len("".join(run)) > len(best_run):
            best_run = "".join(run)
        run = []
        if op is sp.SUBPATTERN:
            inner = _seq_literals(list(av[-1]), sp)
            if inner:
                groups.append(inner)
        elif op is sp.BRANCH:
            alts = [_seq_literals(list(b), sp) for b in av[1]]
            if all(a for a in alts):
                merged: frozenset[str] = frozenset()
                for a in alts:
                    merged |= a  # type: ignore[operator]
                groups.append(merged)
        elif op in (sp.MAX_REPEAT, sp.MIN_REPEAT) and av[0] >= 1:
            inner = _seq_literals(list(av[2]), sp)
            if inner:
                groups.append(inner)
    good = [g for g in groups if all(len(x) >= 3 for x in g)]
    if len(best_run) >= 3:
        # A required group whose every branch is longer than the plain run is the more
        # selective guard (`^\S+ --(?:donate-level|cpu-priority)`: not " --").
        longer = [g for g in good if min(len(x) for x in g) > len(best_run) + 2]
        if longer:
            return min(longer, key=len)
        return frozenset({best_run.lower()})
    if good:
        return min(good, key=len)
    return None


def _literal_of_glob(pattern: str) -> str:
    runs = re.split(r"[*?\[\]]", pattern)
    return max(runs, key=len) if runs else ""


def _atom_clause(node: Cmp) -> frozenset[Atom] | None:
    if node.field == "kind":
        return None
    ftype = field_type(node.field) or "str"
    if node.op == "in" and not node.values:
        return frozenset({("eq", node.field, NEVER)})  # `in ()` never matches
    if node.op in ("=", "in") and ftype in ("str", "list", "ip") and node.values:
        return frozenset(("eq", node.field, v) for v in node.values)
    if node.op in ("contains", "icontains", "startswith", "endswith") and node.values:
        lits = [v.lower() for v in node.values]
        if all(len(v) >= 2 for v in lits):
            return frozenset(("sub", node.field, v) for v in lits)
    if node.op == "regex" and node.values:
        out: set[Atom] = set()
        for v in node.values:
            lits = regex_literals(v)
            if lits is None:
                return None
            out.update(("sub", node.field, x) for x in lits)
        return frozenset(out)
    if node.op == "under":
        # Paths in events are normalised (analysis/acts.norm_path, the sensors' sandbox
        # paths) and resolving only prepends the workspace: a path at or below a root
        # outside the workspace spells the root (without its leading /, since it may be
        # reached as ../../var/log); one inside spells the root relative to the workspace.
        roots = [resolve_path(v) for v in node.values if v]
        if not roots:
            return frozenset({("eq", node.field, NEVER)})  # an empty list never matches
        names: set[Atom] = set()
        for r in roots:
            if r == "/" or r == WORKSPACE or WORKSPACE.startswith(r.rstrip("/") + "/"):
                return None
            if r.startswith(WORKSPACE + "/"):
                lit = r[len(WORKSPACE) + 1:]
            else:
                lit = r.lstrip("/")
            lit = lit.lower()
            if len(lit) < 2:
                return None
            names.add(("sub", node.field, lit))
        return frozenset(names)
    if node.op == "glob" and node.values:
        lits = [_literal_of_glob(v).lower() for v in node.values]
        if all(len(v) >= 3 for v in lits):
            return frozenset(("sub", node.field, v) for v in lits)
    return None


NEVER = "\x00never"  # an equality atom no event value can hold
MAX_CLAUSES = 3
MAX_ALTERNATIVES = 4

Guard = tuple[tuple[frozenset[Atom], ...], ...]


def guard(node: Node) -> Guard | None:
    """A necessary condition for ``node``, in the form the index evaluates cheaply.

    The result is a few *alternatives*; each alternative is a few *clauses*; each clause
    is a set of atoms. The node can only be true if, for some alternative, every clause
    has an atom that holds. And multiplies alternatives (clauses accumulate), Or adds
    them, Not guarantees nothing. Sizes are capped (alternatives merge into one union
    clause when there would be too many), which only ever makes the guard weaker, never
    wrong. None means no guard: evaluate the rule on every event of its kinds.
    """
    alts = _alternatives(node)
    if any(not alt for alt in alts):
        return None
    return tuple(tuple(sorted(alt, key=_cost)[:MAX_CLAUSES]) for alt in alts)


def _collapse(alts: list[list[frozenset[Atom]]]) -> list[list[frozenset[Atom]]]:
    """Merge alternatives into one: the union of each alternative's best clause."""
    if any(not alt for alt in alts):
        return [[]]
    union: frozenset[Atom] = frozenset()
    for alt in alts:
        union |= min(alt, key=_cost)
    return [[union]]


def _alternatives(node: Node) -> list[list[frozenset[Atom]]]:
    if isinstance(node, Cmp):
        clause = _atom_clause(node)
        return [[clause]] if clause else [[]]
    if isinstance(node, Not):
        return [[]]
    parts = [_alternatives(n) for n in node.items]
    if isinstance(node, Or):
        out = [alt for p in parts for alt in p]
        if any(not alt for alt in out):
            return [[]]
        return out if len(out) <= MAX_ALTERNATIVES else _collapse(out)
    size = 1
    for p in parts:
        size *= len(p)
    if size > MAX_ALTERNATIVES:
        parts = [p if len(p) == 1 else _collapse(p) for p in parts]
    result: list[list[frozenset[Atom]]] = [[]]
    for p in parts:
        result = [r + alt for r in result for alt in p]
    return [sorted(alt, key=_cost)[:MAX_CLAUSES] for alt in result]


def _cost(atoms: frozenset[Atom]) -> float:
    # Fewer atoms and longer literals are more selective; equality beats substring.
    total = 0.0
    for kind, _field, value in atoms:
        total += 2.0 if kind == "eq" else 1.0 + 4.0 / max(len(str(value)), 1)
    return total
