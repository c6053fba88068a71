"""Code a running process hands to a shell or an interpreter, judged like a typed command.

The command sensor judges what the agent typed. What actually runs can be code the
typed command only *makes*: a python one-liner that decodes a data file and passes it
to ``sh -c``, a perl script that spells a command with ``chr``, a Makefile recipe, a
git alias. Static analysis of the typed line cannot see that text; the process sensor
can, in the argv of the exec that runs it (the exec listener reports it as exec'd). So
every exec of a shell with ``-c`` or of an interpreter with inline code gives its code
back to the same analyser and rule packs as a command of that call ("cmd.via": exec).

``inline_code(fields)`` picks the exec events that carry such code and returns the
argv to judge, with the program named by its family (``python3.11`` → ``python3``,
``-bash`` → ``bash``), so a renamed or versioned copy of an interpreter is judged as
that interpreter. Programs that embed an interpreter (gdb's ``-ex 'python ...'``,
analysis/hosts.py) are judged the same way when their argv carries code. Which programs
are shells, interpreters and hosts comes from the shared vocabulary
(rules/vocabulary.yaml).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..rules.vocabulary import vocabulary
from .hosts import CODE_HOSTS, hosted_programs

__all__ = ["inline_code", "names_code_runner", "program_family"]

_VOCAB = vocabulary()
_SHELLS = _VOCAB["shell_binaries"]
_INTERPRETERS = _VOCAB["interpreter_binaries"]
# interpreter family -> the options whose next argument is the program text
_CODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "python": ("-c",), "python2": ("-c",), "python3": ("-c",), "pypy": ("-c",),
    "pypy3": ("-c",), "perl": ("-e", "-E"), "perl5": ("-e", "-E"), "ruby": ("-e",),
    "node": ("-e", "-p", "--eval", "--print"), "nodejs": ("-e", "-p", "--eval", "--print"),
    "php": ("-r",), "lua": ("-e",), "luajit": ("-e",), "julia": ("-e",),
    "Rscript": ("-e",), "tclsh": (), "deno": ("eval",), "bun": ("-e", "--eval"),
    "expect": ("-c",),
}
_AWKS = frozenset({"awk", "gawk", "mawk", "nawk"})
# awk options that take a value (the program is the first other word)
_AWK_VALUED = frozenset({"-F", "-v", "-f", "--file", "--assign", "--field-separator"})
_MAX_CODE = 256 * 1024


def program_family(name: str) -> str:
    """``python3.11`` → ``python3``, ``/usr/bin/perl5.36`` → ``perl``, ``-bash`` (a login
    shell) → ``bash``; a name of no known family is returned as its basename."""
    base = name.rsplit("/", 1)[-1].lstrip("-")
    if base in _SHELLS or base in _INTERPRETERS or base in CODE_HOSTS:
        return base
    stripped = re.sub(r"(?<=[a-zA-Z])[\d.]*\d$", "", base)  # version suffix
    for candidate in (re.sub(r"(?<=[a-zA-Z])\d+\.\d+$", "", base), stripped):
        if candidate in _SHELLS or candidate in _INTERPRETERS:
            return candidate
    if stripped + "3" in _INTERPRETERS and base.startswith(stripped + "3"):
        return stripped + "3"
    return base


def names_code_runner(name: str) -> bool:
    """Does ``name`` (as typed) name a shell or an interpreter, so that static analysis
    judged its inline code already?"""
    family = program_family(name)
    return family in _SHELLS or family in _INTERPRETERS or family in CODE_HOSTS


def _family(fields: Mapping[str, Any], args: list[str]) -> str | None:
    """The shell or interpreter family the exec ran, from its executable, its argv[0]
    or its comm (whichever names one: a copy renamed ``x`` still has its exe path)."""
    for name in (str(fields.get("proc.copy_of") or ""), str(fields.get("proc.exe") or ""),
                 args[0] if args else "", str(fields.get("proc.comm") or "")):
        family = program_family(name) if name else ""
        if family in _SHELLS or family in _INTERPRETERS or family in CODE_HOSTS:
            return family
    return None


def _shell_code(args: list[str]) -> str | None:
    """The ``-c`` string of a shell argv (``-c``, ``-ec``, ``-o pipefail -c``, ``--``)."""
    i = 1
    while i < len(args):
        a = args[i]
        if a == "--" or not a.startswith(("-", "+")):
            return None  # a script file, or stdin: no inline code
        if a.startswith("--"):
            i += 1
            continue
        if a in ("-o", "+o", "-O", "+O"):
            i += 2
            continue
        if "c" in a[1:]:
            return args[i + 1] if i + 1 < len(args) else None
        i += 1
    return None


def _interpreter_code(family: str, args: list[str]) -> bool:
    if family in _AWKS:
        i = 1
        while i < len(args):
            a = args[i]
            if a in ("-f", "--file") or a.startswith("--file="):
                return False  # the program is a file
            if a in _AWK_VALUED:
                i += 2
                continue
            if a.startswith("-") and a != "-":
                i += 1
                continue
            return True
        return False
    options = _CODE_OPTIONS.get(family, ())
    short = {o[-1] for o in options if len(o) == 2 and o.startswith("-")}
    for a in args[1:]:
        if a in options:
            return True
        if a in ("-m", "-W", "-X", "-I", "-M", "-r", "--require", "-x") and family != "php":
            return False  # a module or file runs (-m), or an option's value would follow
        if not a.startswith("-") or a == "-" or a == "--":
            return False  # the program is a file (or stdin): its own arguments follow
        if not a.startswith("--") and a[1:].isalpha() and a[-1] in short:
            return True  # bundled flags: perl -lne, python3 -Sc
    return False


def inline_code(fields: Mapping[str, Any]) -> list[str] | None:
    """The argv to judge for an exec event that hands code to a shell (``-c``) or an
    interpreter (``python -c``, ``perl -e``, an awk program...), with argv[0] replaced
    by the family's name; None for every other exec (a script file, a plain program)."""
    raw = fields.get("proc.args")
    if not isinstance(raw, list) or len(raw) < 2:
        return None
    args = [a if isinstance(a, str) else str(a) for a in raw]
    if sum(len(a) for a in args) > _MAX_CODE:
        args = [a[:_MAX_CODE] for a in args]
    family = _family(fields, args)
    if family is None:
        return None
    if family in _SHELLS:
        return [family, *args[1:]] if _shell_code(args) is not None else None
    if family in CODE_HOSTS:  # gdb -ex 'python CODE': the code runs inside gdb
        return [family, *args[1:]] if hosted_programs(family, args) else None
    if _interpreter_code(family, args):
        return [family, *args[1:]]
    return None
