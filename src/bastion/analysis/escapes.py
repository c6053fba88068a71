"""Bash quoting and escape rules, applied statically.

Agents (and the people who write evasion cheat-sheets) hide program names with quoting
tricks: ``s''sh``, ``\\s\\s\\h``, ``$'\\x73sh'``, ``printf '\\163\\163\\150'``. Each function
here undoes one of bash's own rules, so the analyser sees what bash would run.
"""

from __future__ import annotations

import re

__all__ = ["ansi_c", "echo_e", "printf_format", "unescape_bare", "unescape_double"]

_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
           "e": "\x1b", "E": "\x1b", "\\": "\\", "'": "'", '"': '"', "?": "?"}


def unescape_bare(text: str) -> str:
    """An unquoted word: backslash-newline vanishes, ``\\x`` is ``x``."""
    if "\\" not in text:
        return text
    return re.sub(r"\\(\n|.)", lambda m: "" if m.group(1) == "\n" else m.group(1), text, flags=re.DOTALL)


def unescape_double(text: str) -> str:
    """Inside double quotes only ``\\$ \\` \\" \\\\`` and backslash-newline are escapes."""
    if "\\" not in text:
        return text
    return re.sub(r'\\([$`"\\\n])', lambda m: "" if m.group(1) == "\n" else m.group(1), text)


def _c_escapes(text: str, *, octal_needs_zero: bool) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "\\" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _SIMPLE:
            out.append(_SIMPLE[nxt])
            i += 2
        elif nxt == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2:])
            if m:
                out.append(chr(int(m.group(), 16)))
                i += 2 + m.end()
            else:
                out.append("\\x")
                i += 2
        elif nxt in "uU":
            m = re.match(r"[0-9a-fA-F]{1,%d}" % (4 if nxt == "u" else 8), text[i + 2:])
            if m:
                try:
                    out.append(chr(int(m.group(), 16)))
                except ValueError:
                    out.append(m.group())
                i += 2 + m.end()
            else:
                out.append("\\" + nxt)
                i += 2
        elif nxt == "c" and i + 2 < n:
            out.append(chr(ord(text[i + 2]) & 0x1F))
            i += 3
        elif nxt.isdigit() and nxt in "01234567":
            digits = text[i + 1:]
            if octal_needs_zero:
                m = re.match(r"0([0-7]{0,3})", digits)
                if not m:
                    out.append("\\" + nxt)
                    i += 2
                    continue
                value = m.group(1) or "0"
                i += 1 + m.end()
            else:
                m = re.match(r"[0-7]{1,3}", digits)
                value = m.group() if m else "0"
                i += 1 + (m.end() if m else 1)
            out.append(chr(int(value, 8) & 0xFF))
        else:
            out.append("\\" + nxt)
            i += 2
    return "".join(out)


def ansi_c(text: str) -> str:
    """The body of ``$'...'``."""
    return _c_escapes(text, octal_needs_zero=False)


def echo_e(text: str) -> str:
    """``echo -e`` escapes (octal is ``\\0nnn``; ``\\c`` stops output)."""
    cut = text.find("\\c")
    if cut >= 0:
        text = text[:cut]
    return _c_escapes(text, octal_needs_zero=True)


_FMT = re.compile(r"%(?:%|[-+ #0]*\d*(?:\.\d+)?([a-zA-Z]))")


def printf_format(fmt: str, args: list[str]) -> str:
    """What ``printf FMT ARGS...`` prints (enough of it to reveal hidden text).

    Like printf, the format is reused while arguments remain.
    """
    body = _c_escapes(fmt, octal_needs_zero=False)
    if "%" not in body:
        return body
    out: list[str] = []
    pending = list(args)
    for _round in range(64):
        state = {"used": False}

        def convert(m: re.Match[str], state: dict[str, bool] = state) -> str:
            if m.group() == "%%":
                return "%"
            state["used"] = True
            arg = pending.pop(0) if pending else ""
            conv = m.group(1)
            if conv == "b":
                return echo_e(arg)
            if conv == "c":
                return arg[:1]
            return arg

        out.append(_FMT.sub(convert, body))
        if not state["used"] or not pending:
            break
    return "".join(out)
