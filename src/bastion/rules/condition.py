"""Parse a rule condition into a small syntax tree.

Grammar (Falco-like; keywords are case-sensitive and lower-case)::

    expr     := and_expr ("or" and_expr)*
    and_expr := unary ("and" unary)*
    unary    := "not" unary | "(" expr ")" | MACRO | comparison
    comparison := FIELD ("=" | "==" | "!=") VALUE
                | FIELD ("<" | "<=" | ">" | ">=") NUMBER
                | FIELD "in" "(" VALUES ")"
                | FIELD ("contains" | "icontains" | "startswith" | "endswith"
                         | "glob" | "regex" | "in_cidr" | "under" | "over")
                        (VALUE | "(" VALUES ")")
                | FIELD "exists"
    VALUES   := VALUE ("," VALUE)*      a bare name of a ``list`` item expands to its items
    VALUE    := bare-word | "double quoted" | 'single quoted'
                (inside quotes only the enclosing quote is escaped, as \" or \'; every
                other backslash is kept, so regexes are written as in Python)

Positions are character offsets into the condition text; the loader turns them into
file:line:column. Macros are expanded at parse time (their own trees keep their own
positions), so the compiled form has no indirection left.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

__all__ = [
    "STRING_OPS",
    "And",
    "Cmp",
    "ConditionSyntaxError",
    "Node",
    "Not",
    "Or",
    "parse_condition",
]

STRING_OPS = frozenset(
    {"contains", "icontains", "startswith", "endswith", "glob", "regex", "in_cidr",
     "under", "over"}
)
_SYMBOL_OPS = frozenset({"=", "==", "!=", "<", "<=", ">", ">="})
_KEYWORDS = frozenset({"and", "or", "not", "in", "exists"} | STRING_OPS)

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<lp>\()|(?P<rp>\))|(?P<comma>,)
      |(?P<op><=|>=|!=|==|=|<|>)
      |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      |(?P<word>[^\s(),=<>!"']+)""",
    re.VERBOSE | re.DOTALL,
)


class ConditionSyntaxError(Exception):
    """A condition is malformed; ``offset`` is where, in the condition text."""

    def __init__(self, message: str, offset: int, source: object = None) -> None:
        super().__init__(message)
        self.offset = offset
        # Which text ``offset`` refers to (a macro's condition, not the rule's).
        self.source = source


@dataclass(frozen=True)
class Cmp:
    field: str
    op: str
    values: tuple[str, ...]
    offset: int
    value_offset: int
    source: object = None


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Union[Cmp, And, Or, Not]


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    offset: int


def _tokenize(text: str, source: object) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConditionSyntaxError(f"unexpected character {text[pos]!r}", pos, source)
        kind = m.lastgroup or ""
        if kind != "ws":
            raw = m.group()
            if kind == "str":
                # Only the enclosing quote is escapable, so regexes keep their backslashes.
                quote = raw[0]
                raw = raw[1:-1].replace("\\" + quote, quote)
            toks.append(_Tok(kind, raw, m.start()))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    def __init__(
        self,
        text: str,
        source: object,
        is_field: Callable[[str], bool],
        lists: Mapping[str, Sequence[str]],
        macros: Callable[[str], Node | None],
    ) -> None:
        self.toks = _tokenize(text, source)
        self.i = 0
        self.source = source
        self.is_field = is_field
        self.lists = lists
        self.macros = macros

    def error(self, message: str, tok: _Tok | None = None) -> ConditionSyntaxError:
        tok = tok or self.toks[self.i]
        return ConditionSyntaxError(message, tok.offset, self.source)

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def is_word(self, text: str) -> bool:
        tok = self.peek()
        return tok.kind == "word" and tok.text == text

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.error("empty condition")
        node = self.expr()
        if self.peek().kind != "end":
            raise self.error(f"unexpected {self.peek().text!r}; expected 'and', 'or' or end")
        return node

    def expr(self) -> Node:
        items = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.unary()]
        while self.is_word("and"):
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Node:
        tok = self.peek()
        if tok.kind == "word" and tok.text == "not":
            self.take()
            return Not(self.unary())
        if tok.kind == "lp":
            self.take()
            node = self.expr()
            if self.peek().kind != "rp":
                raise self.error("expected ')'")
            self.take()
            return node
        if tok.kind != "word" or tok.text in _KEYWORDS:
            raise self.error(f"expected a field, macro, 'not' or '(' but found {tok.text!r}"
                             if tok.kind != "end" else "condition ends too early")
        self.take()
        macro = self.macros(tok.text)
        if macro is not None:
            return macro
        if not self.is_field(tok.text):
            raise self.error(f"unknown field or macro {tok.text!r}", tok)
        return self.comparison(tok)

    def comparison(self, field: _Tok) -> Node:
        op_tok = self.take()
        if op_tok.kind == "op":
            op = "=" if op_tok.text == "==" else op_tok.text
            val = self.value()
            return Cmp(field.text, op, (val.text,), field.offset, val.offset, self.source)
        if op_tok.kind != "word" or op_tok.text not in (_KEYWORDS - {"and", "or", "not"}):
            raise self.error(f"expected an operator after {field.text!r}", op_tok)
        op = op_tok.text
        if op == "exists":
            return Cmp(field.text, op, (), field.offset, op_tok.offset, self.source)
        if op == "in":
            if self.peek().kind != "lp":
                raise self.error("'in' needs a parenthesised list")
            start, values = self.value_list()
            return Cmp(field.text, op, values, field.offset, start, self.source)
        if self.peek().kind == "lp":
            start, values = self.value_list()
        elif op in ("under", "over") and self.peek().kind == "word" and \
                self.peek().text in self.lists:
            val = self.value()
            start, values = val.offset, tuple(self.expand(val.text, val))
        else:
            val = self.value()
            start, values = val.offset, (val.text,)
            if val.kind == "word" and val.text in self.lists:
                values = tuple(self.expand(val.text, val))
        return Cmp(field.text, op, values, field.offset, start, self.source)

    def value(self) -> _Tok:
        tok = self.take()
        if tok.kind not in ("word", "str"):
            raise self.error("expected a value", tok)
        return tok

    def value_list(self) -> tuple[int, tuple[str, ...]]:
        start = self.take().offset  # '('
        values: list[str] = []
        if self.peek().kind == "rp":
            self.take()
            return start, ()
        while True:
            tok = self.value()
            if tok.kind == "word" and tok.text in self.lists:
                values.extend(self.expand(tok.text, tok))
            else:
                values.append(tok.text)
            nxt = self.take()
            if nxt.kind == "rp":
                return start, tuple(values)
            if nxt.kind != "comma":
                raise self.error("expected ',' or ')' in value list", nxt)

    def expand(self, name: str, tok: _Tok, seen: frozenset[str] = frozenset()) -> list[str]:
        if name in seen:
            raise self.error(f"list {name!r} refers to itself", tok)
        out: list[str] = []
        for item in self.lists[name]:
            if item in self.lists and item != name:
                out.extend(self.expand(item, tok, seen | {name}))
            else:
                out.append(item)
        return out


def parse_condition(
    text: str,
    *,
    is_field: Callable[[str], bool],
    lists: Mapping[str, Sequence[str]] | None = None,
    macros: Callable[[str], Node | None] | None = None,
    source: object = None,
) -> Node:
    """Parse ``text``; raise ConditionSyntaxError(message, offset, source) on error."""
    return _Parser(text, source, is_field, lists or {}, macros or (lambda _n: None)).parse()
