"""Lines a text tool picks from a file whose text is known, before the command runs.

A path kept in a list written by an earlier call and picked out at run time
(``base64 < "$(sed -n 3p .cache/list)"``) is a path the analyser can know: the list's
text is what that call wrote (CallMemory) or what the sandbox holds now. ``sed -n Np``
(``N,Mp``, ``N{p;q}``, ``N!d``, ``Nq``), ``head``/``tail -n`` and ``awk 'NR==N'`` print
known lines of a known text (a file, or what the pipe feeds them); anything else is
unknown (None), as before.
"""

from __future__ import annotations

import re
from typing import Any

from .clientconf import file_text

__all__ = ["selected_lines"]


def selected_lines(an: Any, name: str, argv: list[str], stdin: str | None) -> str | None:
    """What ``sed -n 3p F``, ``head -n 3 F``, ``tail -n 1 F``, ``awk 'NR==3' F`` print
    when F's text (or the piped input) is known: a path picked from a list written
    earlier (``base64 < "$(sed -n 3p .cache/list)"``) is then that path."""
    args = argv[1:]
    if len(args) > 6 or any(a in ("-i", "--in-place", "-f", "--file") for a in args):
        return None
    lines: tuple[int, int | None] | None = None  # 1-based first line, last (None: to end)
    operands: list[str] = []
    quiet = False
    i = 0
    while i < len(args):
        a = args[i]
        if name in ("head", "tail") and a in ("-n", "--lines") and i + 1 < len(args):
            lines = _head_tail(name, args[i + 1])
            i += 2
            continue
        if name in ("head", "tail") and (re.fullmatch(r"-n?[+-]?\d+", a) or a.startswith("--lines=")):
            lines = _head_tail(name, a.split("=", 1)[1] if "=" in a else a.lstrip("-n") or "10")
        elif name == "sed" and a in ("-n", "--quiet", "--silent"):
            quiet = True
        elif name == "sed" and a in ("-e", "--expression") and i + 1 < len(args):
            operands.insert(0, args[i + 1])
            i += 2
            continue
        elif a.startswith("-") and a != "-":
            return None
        else:
            operands.append(a)
        i += 1
    if name in ("sed", "awk", "gawk", "mawk"):
        if not operands:
            return None
        lines = _sed_lines(operands[0], quiet) if name == "sed" else _awk_lines(operands[0])
        operands = operands[1:]
    elif lines is None:
        lines = (1, 10) if name == "head" else None
    if lines is None or len(operands) > 1:
        return None
    text = stdin if not operands or operands[0] == "-" else file_text(an, operands[0])
    if text is None:
        return None
    all_lines = text.splitlines()
    first, last = lines
    if first < 0:  # tail -n N: the last N lines
        picked = all_lines[first:] if -first <= len(all_lines) else all_lines
    else:
        picked = all_lines[first - 1:last]
    out = "\n".join(picked)
    return out + "\n" if picked and len(out) <= 65536 else ("" if not picked else None)


def _head_tail(name: str, spec: str) -> tuple[int, int | None] | None:
    m = re.fullmatch(r"([+-]?)(\d+)", spec)
    if not m:
        return None
    n = int(m.group(2))
    if name == "head":
        return (1, n) if m.group(1) != "-" else None
    return (n, None) if m.group(1) == "+" else (-n, None) if n else None


def _sed_lines(script: str, quiet: bool) -> tuple[int, int | None] | None:
    s = script.strip()
    if quiet:
        m = re.fullmatch(r"(\d+)(?:,(\d+))?\s*(?:p|\{\s*p\s*;\s*q\s*;?\s*\}|p\s*;\s*\d+q)", s)
        if m:
            return int(m.group(1)), int(m.group(2) or m.group(1))
        return None
    m = re.fullmatch(r"(\d+)\s*!\s*d|(\d+)q", s)
    if m and m.group(1):
        return int(m.group(1)), int(m.group(1))
    if m:
        return 1, int(m.group(2))
    return None


def _awk_lines(program: str) -> tuple[int, int | None] | None:
    m = re.fullmatch(r"\s*NR\s*==\s*(\d+)\s*(?:\{\s*print(?:\s+\$0)?\s*;?\s*(?:exit\s*;?\s*)?\})?\s*", program)
    return (int(m.group(1)), int(m.group(1))) if m else None
