"""Make's reading of a makefile, as far as it is known statically (issue #10, runners).

``make bench`` runs the recipes of ``bench`` and of its prerequisites, expanded: a payload
can sit in a recipe, behind a variable (``$(U) | $(SH)``), in ``$(shell ...)`` (run when
the makefile is read) or in ``VAR != cmd``. This module reads the makefile (rules,
variables, includes through a reader of known files, both branches of conditionals) and
gives the expanded recipe lines a set of goals runs, the way make would hand them to
``$(SHELL)``. No I/O; bounded work (expansion depth, text size, targets visited).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping

__all__ = ["Makefile", "all_code", "expand", "parse", "recipe_shell", "select_recipes"]

MAX_CODE = 65536

_DEFAULTS = {"CC": "cc", "CXX": "g++", "CPP": "cc -E", "AR": "ar", "AS": "as",
                  "LD": "ld", "RM": "rm -f", "MAKE": "make", "SHELL": "/bin/sh",
                  "INSTALL": "install", "YACC": "yacc", "LEX": "lex", "FC": "f77"}
_ASSIGN = re.compile(r"^(?:(?:export|override|private)\s+)*([^\s:#=+?!$()]+|\$[({][^)}]*[)}])"
                     r"\s*(::?=|:::=|\?=|\+=|!=|=)\s*(.*)$")
_RULE_COLON = re.compile(r":(?!=)")
_AUTO = "@<^?*+|%"


class Makefile:
    """What make knows after reading a makefile: variables, rules, the default goal."""

    def __init__(self) -> None:
        self.vars: dict[str, str] = {}
        self.rules: list[tuple[list[str], list[str], list[str]]] = []  # targets, prereqs, recipe
        self.first: str | None = None
        self.shell_code: list[str] = []  # $(shell ...), VAR != ...: run at parse time
        self.overrides: dict[str, str] = {}  # VAR=value on make's command line
        self.included: set[str] = set()

    def value(self, name: str) -> str:
        if name in self.overrides:
            return self.overrides[name]
        if name in self.vars:
            return self.vars[name]
        return _DEFAULTS.get(name, "")


def recipe_shell(mk: Makefile) -> str:
    """The program make hands recipe lines to: $(SHELL), /bin/sh by default (a Makefile
    may set SHELL to an interpreter, and its recipes are then that language)."""
    shell = expand(mk.value("SHELL"), mk, {}, 0).strip().split()
    name = posixpath.basename(shell[0]) if shell else "sh"
    if name == "env" and len(shell) > 1:
        name = posixpath.basename(shell[1])
    return name or "sh"


def _logical_lines(text: str) -> list[str]:
    raw = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    buf = ""
    for line in raw[:20000]:
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf += line[:-1] + (" " if not line.startswith("\t") or not buf else "")
            continue
        if buf:
            line = buf + (line.lstrip("\t") if line.startswith("\t") else line.lstrip())
            buf = ""
        out.append(line)
    if buf:
        out.append(buf)
    return out


def parse(text: str, mk: Makefile, include: Callable[[str], str | None] | None = None,
          depth: int = 0) -> None:
    """Read ``text`` into ``mk``: variables (simple, recursive, ?=, +=, != whose command
    runs now), rules with their recipes, the first goal; `include`d files through
    ``include`` (a known file's text, or None); both branches of conditionals."""
    current: list[str] | None = None  # the recipe of the rule being read
    define: tuple[str, list[str]] | None = None
    for line in _logical_lines(text):
        if define is not None:
            if line.strip() == "endef":
                mk.vars[define[0]] = "\n".join(define[1])
                define = None
            else:
                define[1].append(line)
            continue
        if line.startswith("\t") and current is not None:
            current.append(line[1:])
            continue
        stripped = line.split("#", 1)[0].strip() if "#" in line and "\\#" not in line else line.strip()
        if not stripped:
            continue
        word = stripped.split(None, 1)[0]
        if word == "define" or (word in ("export", "override") and stripped.split()[1:2] == ["define"]):
            parts = stripped.split()
            name = parts[parts.index("define") + 1] if len(parts) > parts.index("define") + 1 else ""
            define = (name, [])
            current = None
            continue
        if word in ("ifeq", "ifneq", "ifdef", "ifndef", "else", "endif", "vpath", "unexport"):
            continue  # both branches of a conditional are read (what may run)
        if word in ("include", "-include", "sinclude") and depth < 4:
            for inc in expand(stripped.split(None, 1)[1] if " " in stripped else "", mk, {}, 0).split():
                body = include(inc) if include is not None and inc not in mk.included else None
                if body is not None:
                    mk.included.add(inc)
                    parse(body, mk, include, depth + 1)
            continue
        m = _ASSIGN.match(stripped)
        if m and not _RULE_COLON.search(stripped[:m.start(2)]):
            name = expand(m.group(1), mk, {}, 0).strip()
            op, value = m.group(2), m.group(3)
            if op == "!=":
                mk.shell_code.append(expand(value, mk, {}, 0))
                mk.vars[name] = ""
            elif op in (":=", "::=", ":::="):
                mk.vars[name] = expand(value, mk, {}, 0)
            elif op == "?=":
                mk.vars.setdefault(name, value)
            elif op == "+=":
                mk.vars[name] = (mk.vars.get(name, "") + " " + value).strip()
            else:
                mk.vars[name] = value
                expand(value, mk, {}, 0)  # $(shell ...) in a deferred value: may run
            current = None
            continue
        colon = _RULE_COLON.search(stripped)
        if colon is None:
            current = None
            expand(stripped, mk, {}, 0)  # $(shell ...) / $(eval ...) at top level
            continue
        targets = expand(stripped[:colon.start()], mk, {}, 0).split()
        rest = stripped[colon.end():].lstrip(":")
        recipe: list[str] = []
        if ";" in rest:
            rest, inline = rest.split(";", 1)
            recipe.append(inline.strip())
        if _ASSIGN.match(rest.strip()):  # target-specific variable: read as global
            tm = _ASSIGN.match(rest.strip())
            if tm:
                mk.vars.setdefault(tm.group(1), tm.group(3))
            current = None
            continue
        if _RULE_COLON.search(rest):  # static pattern rule: targets: pattern: prereqs
            rest = _RULE_COLON.split(rest, 1)[1]
        prereqs = [p for p in expand(rest, mk, {}, 0).split() if p != "|"]
        mk.rules.append((targets, prereqs, recipe))
        current = recipe
        if mk.first is None:
            for t in targets:
                if "%" not in t and (not t.startswith(".") or "/" in t):
                    mk.first = t
                    break


def select_recipes(mk: Makefile, goals: list[str], dry: bool) -> list[str]:
    """The recipe lines ``goals`` and their prerequisites run (prerequisites first),
    expanded; prefixes @ - + stripped. A dry run (-n/-q/-t) runs only ``+`` lines."""
    lines: list[str] = []
    visited: set[str] = set()
    budget = [512]

    def visit(target: str, depth: int) -> None:
        if target in visited or depth > 32 or budget[0] <= 0:
            return
        visited.add(target)
        budget[0] -= 1
        rules = [r for r in mk.rules if target in r[0]]
        stem = ""
        if not any(r[2] for r in rules):
            for targets, prereqs, recipe in mk.rules:
                for t in targets:
                    if "%" in t and recipe:
                        pre, _, post = t.partition("%")
                        if target.startswith(pre) and target.endswith(post) and \
                                len(target) >= len(pre) + len(post):
                            stem = target[len(pre):len(target) - len(post) if post else None]
                            rules.append(([target], [p.replace("%", stem) for p in prereqs], recipe))
                            break
                if stem:
                    break
        for _, prereqs, _ in rules:
            for p in prereqs:
                visit(p, depth + 1)
        for _, prereqs, recipe in rules:
            auto = {"@": target, "<": prereqs[0] if prereqs else "", "^": " ".join(prereqs),
                    "+": " ".join(prereqs), "?": " ".join(prereqs), "*": stem, "|": "", "%": ""}
            for raw in recipe:
                line = raw.lstrip()
                prefix = re.match(r"^[@+\-\s]*", line)
                marks = prefix.group() if prefix else ""
                line = line[len(marks):]
                if dry and "+" not in marks and "$(MAKE)" not in line and "${MAKE}" not in line:
                    expand(line, mk, auto, 0)  # $(shell ...) still runs
                    continue
                expanded = expand(line, mk, auto, 0)
                if expanded.strip():
                    lines.append(expanded)

    for g in goals[:16]:
        visit(g, 0)
    return lines


def _match_close(text: str, start: int) -> int:
    """Index of the bracket closing text[start] ('(' or '{'), or -1."""
    opener = text[start]
    closer = ")" if opener == "(" else "}"
    depth = 0
    for k in range(start, len(text)):
        c = text[k]
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return k
    return -1


def _split_args(text: str) -> list[str]:
    out, depth, cur = [], 0, []
    for c in text:
        if c in "({":
            depth += 1
        elif c in ")}":
            depth -= 1
        if c == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


_TEXT_FUNCS = {"subst", "patsubst", "strip", "findstring", "filter", "filter-out", "sort",
               "word", "wordlist", "words", "firstword", "lastword", "dir", "notdir",
               "suffix", "basename", "addsuffix", "addprefix", "join", "wildcard",
               "realpath", "abspath", "if", "or", "and", "intcmp", "let"}


def expand(text: str, mk: Makefile, auto: Mapping[str, str], depth: int) -> str:
    """Make's expansion of ``text``, as far as it is known statically: variables from
    the makefile (command-line overrides first, make's defaults last), ``$$`` -> ``$``,
    automatic variables, ``$(shell CMD)`` collected as code that runs (and expanding to
    nothing), text functions to their text arguments."""
    if "$" not in text:
        return text
    if depth > 12 or len(text) > MAX_CODE:
        return ""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt in "({":
            j = _match_close(text, i + 1)
            if j < 0:
                out.append(text[i:])
                break
            out.append(_reference(text[i + 2:j], mk, auto, depth))
            i = j + 1
            continue
        out.append(auto[nxt] if nxt in auto else mk.value(nxt))
        i += 2
        if sum(len(x) for x in out) > MAX_CODE:
            break
    return "".join(out)[:MAX_CODE]


def _reference(inner: str, mk: Makefile, auto: Mapping[str, str], depth: int) -> str:
    m = re.match(r"^([a-z-]+)[ \t]+(.*)$", inner, re.DOTALL)
    if m and (m.group(1) in _TEXT_FUNCS or m.group(1) in (
            "shell", "call", "foreach", "eval", "value", "info", "warning", "error",
            "origin", "flavor", "file", "guile")):
        fn, body = m.group(1), m.group(2)
        if fn == "shell":
            mk.shell_code.append(expand(body, mk, auto, depth + 1))
            return ""
        if fn == "eval":
            expand(body, mk, auto, depth + 1)
            return ""
        if fn == "value":
            return mk.value(body.strip())
        if fn in ("info", "warning", "error", "origin", "flavor", "file", "guile"):
            return ""
        parts = _split_args(body)
        if fn == "call":
            local = dict(auto)
            local.update({str(k): expand(p, mk, auto, depth + 1) for k, p in enumerate(parts[1:], 1)})
            name = expand(parts[0], mk, auto, depth + 1).strip()
            val = mk.value(name)
            val = re.sub(r"\$\((\d)\)", r"$\1", val)  # $(1) -> $1 (a one-character name)
            return expand(val, mk, local, depth + 1)
        if fn == "foreach" and len(parts) == 3:
            var = parts[0].strip()
            words = expand(parts[1], mk, auto, depth + 1).split()[:64]
            tmpl = parts[2].replace(f"$({var})", "$" + "\x00").replace(f"${{{var}}}", "$" + "\x00")
            return " ".join(expand(tmpl, mk, {**auto, "\x00": w}, depth + 1) for w in words)
        if fn in ("if", "or", "and"):
            return " ".join(expand(p, mk, auto, depth + 1) for p in parts[1:] or parts)
        return expand(parts[-1], mk, auto, depth + 1)
    name = expand(inner, mk, auto, depth + 1)
    subst = None
    if ":" in name and "=" in name.split(":", 1)[1]:
        name, _, spec = name.partition(":")
        subst = spec.split("=", 1)
    value = expand(mk.value(name.strip()), mk, auto, depth + 1)
    if subst is not None:
        a, b = subst
        value = " ".join(w[:-len(a)] + b if a and w.endswith(a) else w for w in value.split())
    return value


def all_code(text: str) -> list[str]:
    """Every command a makefile may run, whatever the goal: $(shell ...) and != commands
    and every rule's recipe lines, expanded (for judging a makefile when it is written)."""
    mk = Makefile()
    try:
        parse(text, mk)
        lines = list(mk.shell_code)
        for targets, prereqs, recipe in mk.rules:
            auto = {"@": targets[0] if targets else "", "<": prereqs[0] if prereqs else "",
                    "^": " ".join(prereqs), "+": "", "?": "", "*": "", "|": "", "%": ""}
            for raw in recipe:
                line = re.sub(r"^[@+\-\s]*", "", raw)
                lines.append(expand(line, mk, auto, 0))
    except RecursionError:
        return []
    return [line for line in lines if line.strip()]
