"""What a command asks the kernel for, in bytes: storage it reserves or writes, memory
it allocates. Sans-I/O: judged from the analyser's fields of a ``command`` event.

Some resource bombs move no counter at all: ``fallocate -l 60G f`` on a 1 GiB tmpfs
is refused whole with ENOSPC, ``python3 -c 'b = bytearray(30 * 2**30)'`` with ENOMEM
before a page is touched, so neither the filesystem nor the memory cgroup ever looks
full. What shows the attempt is the request itself: a size the command asks for that
the session's limit cannot hold. Only requests that are *real* count:

* ``fallocate -l SIZE`` (reserves the space; ``--punch-hole``/``--dig-holes``/
  ``--collapse-range`` free it, and are not requests);
* ``dd`` with ``of=`` a file: ``bs`` x ``count`` bytes written (and ``bs`` bytes of
  buffer in memory); ``dd if=/dev/zero of=f`` without ``count`` writes until refused;
* ``head -c SIZE`` of ``/dev/zero`` or ``/dev/*random`` when the command writes a file;
* interpreter code allocating ``bytearray(N)``, ``bytes(N)``, ``b"\\0" * N``,
  ``os.urandom(N)``, ``mmap.mmap(-1, N)``, ``numpy.zeros/ones/empty(N)`` (bytes:
  N elements of 8 bytes), with N a constant expression; or keeping an allocation every
  round of a loop that nothing leaves (``while True: a.append(bytearray(1 << 26))``:
  without end).

``truncate -s`` makes a sparse file (no space is used) and is not a request.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Request", "command_requests", "parse_size"]

UNBOUNDED = float("inf")

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_ZERO_SOURCES = ("/dev/zero", "/dev/urandom", "/dev/random")


@dataclass(frozen=True, slots=True)
class Request:
    """One request: ``kind`` is ``disk`` or ``memory``; ``size`` in bytes (``inf``
    for "until refused"); ``what`` names the program and option, for the verdict."""

    kind: str
    size: float
    what: str


def parse_size(text: str, *, dd: bool = False) -> float | None:
    """Bytes in a size argument as coreutils/util-linux read it: ``60G`` and ``60GiB``
    are powers of 1024, ``60GB`` of 1000; dd also takes ``NxM`` products and ``c``/``w``/
    ``b`` suffixes (1, 2, 512 bytes)."""
    text = text.strip()
    if dd and "x" in text:
        total = 1.0
        for part in text.split("x"):
            one = parse_size(part, dd=True)
            if one is None:
                return None
            total *= one
        return total
    if dd and text[-1:] in ("c", "w") and text[:-1].isdigit():
        return float(int(text[:-1]) * (1 if text[-1] == "c" else 2))
    if dd and text[-1:] == "b" and text[:-1].isdigit():
        return float(int(text[:-1]) * 512)
    m = _SIZE.match(text)
    if m is None:
        return None
    number, unit, tail = float(m.group(1)), m.group(2).lower(), m.group(3).lower()
    base = 1000 if tail == "b" and unit else 1024
    return number * base ** _UNITS[unit]


def _option(words: Sequence[str], short: str, long: str) -> str | None:
    for i, w in enumerate(words):
        if w in (short, long) and i + 1 < len(words):
            return words[i + 1]
        if w.startswith(long + "="):
            return w.split("=", 1)[1]
        if w.startswith(short) and len(w) > len(short) and not w.startswith("--"):
            return w[len(short):]
    return None


def _fallocate(words: Sequence[str]) -> list[Request]:
    if any(w in ("-p", "--punch-hole", "-d", "--dig-holes", "-c", "--collapse-range",
                 "-z", "--zero-range") for w in words[1:]):
        return []
    size = _option(words[1:], "-l", "--length")
    n = parse_size(size) if size else None
    return [Request("disk", n, f"fallocate -l {size}")] if n else []


def _dd(words: Sequence[str]) -> list[Request]:
    opts = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    out: list[Request] = []
    bs = parse_size(opts.get("bs") or opts.get("obs") or "512", dd=True)
    if bs and ("bs" in opts or "ibs" in opts):
        out.append(Request("memory", bs, f"dd bs={opts.get('bs') or opts.get('ibs')}"))
    target = opts.get("of")
    if not target or target.startswith("/dev/") or bs is None:
        return out
    count = opts.get("count")
    if count is not None:
        n = parse_size(count, dd=True)
        if n:
            out.append(Request("disk", bs * n, f"dd bs={opts.get('bs', '512')} count={count}"))
    elif opts.get("if", "") in _ZERO_SOURCES:
        out.append(Request("disk", UNBOUNDED, f"dd if={opts['if']} (no count)"))
    return out


def _head(words: Sequence[str], writes: bool) -> list[Request]:
    if not writes or not any(w in _ZERO_SOURCES for w in words[1:]):
        return []
    size = _option(words[1:], "-c", "--bytes")
    n = parse_size(size) if size else None
    return [Request("disk", n, f"head -c {size}")] if n else []


# allocations in code: the argument is evaluated only as a constant integer expression
_ALLOC = re.compile(
    r"(?:\bbytearray|\bbytes|os\.urandom|\b(?:np|numpy)\.(?:zeros|ones|empty))\s*\(\s*([0-9*+<\s()_-]+)\)|"
    r"mmap\.mmap\(\s*-1\s*,\s*([0-9*+<\s()_-]+)[,)]|"
    r"b['\"](?:\\x00|\\0|[^'\"\\]{1,8})['\"]\s*\*\s*([0-9*+<\s()_-]+)")


def _constant(expr: str) -> float | None:
    """The value of an integer expression of literals and + - * ** <<, or None."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return float(node.value)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Pow) and b <= 128:
                return a ** b
            if isinstance(node.op, ast.LShift) and b <= 128:
                return a * 2.0 ** b
        raise ValueError("not a constant")

    try:
        return ev(tree.body)
    except (ValueError, OverflowError):
        return None


# an allocation kept forever: appended to a list or added to a buffer, every round of a
# loop that nothing leaves (``a = []; while True: a.append(bytearray(1 << 26))``)
_FOREVER = re.compile(r"^([ \t]*)(?:while\s*\(?\s*(?:True|1)\s*\)?\s*:|for\s+\w+\s+in\s+"
                      r"(?:itertools\.)?count\(\s*\)\s*:)(.*)$", re.MULTILINE)
_KEEP = re.compile(r"\.(?:append|extend)\(\s*(?:bytearray|bytes|b['\"]|['\"]|os\.urandom)|"
                   r"\+=\s*(?:b?['\"][^'\"]*['\"]\s*\*|bytearray\(|bytes\()")
_LEAVE = re.compile(r"\b(?:break|return|exit)\b|sys\.exit|os\._exit")


def _grows_forever(code: str) -> bool:
    lines = code.splitlines()
    for m in _FOREVER.finditer(code):
        body = [m.group(2)]
        indent = len(m.group(1).expandtabs())
        start = code.count("\n", 0, m.start()) + 1
        for line in lines[start:start + 200]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
        text = "\n".join(body)
        if _KEEP.search(text) and not _LEAVE.search(text):
            return True
    return False


def _code(code: str) -> list[Request]:
    out: list[Request] = []
    if _grows_forever(code[:65536]):
        out.append(Request("memory", UNBOUNDED, "an allocation kept every round of an endless loop"))
    for m in _ALLOC.finditer(code[:65536]):
        expr = next(g for g in m.groups() if g is not None).strip()
        n = _constant(expr)
        while n is None and expr.endswith(")"):  # the call's own closing parenthesis
            expr = expr[:-1].rstrip()
            n = _constant(expr)
        if n is None or n < 1:
            continue
        if "np." in m.group(0) or "numpy." in m.group(0):
            n *= 8
        out.append(Request("memory", n, m.group(0).strip()[:80]))
    return out


def command_requests(argv: Iterable[str], code: Iterable[str] = (),
                     writes: bool = False) -> list[Request]:
    """The requests of one command: ``argv`` are its simple commands (the analyser's
    ``cmd.argv``), ``code`` its interpreter code (``cmd.interp_code``), ``writes``
    whether it writes any file (``cmd.writes``)."""
    out: list[Request] = []
    for line in argv:
        words = line.split()
        while words and words[0] in ("sudo", "doas", "nohup", "exec", "command", "time",
                                     "nice", "ionice", "timeout", "env", "stdbuf"):
            words = words[1:]
            while words and (words[0].startswith("-") or words[0][:1].isdigit()
                             or "=" in words[0]):
                words = words[1:]  # the wrapper's own options and arguments
        if not words:
            continue
        prog = words[0].rsplit("/", 1)[-1]
        if prog == "fallocate":
            out += _fallocate(words)
        elif prog == "dd":
            out += _dd(words)
        elif prog == "head":
            out += _head(words, writes)
    for text in code:
        out += _code(text)
    return list(dict.fromkeys(out))  # ``sudo X`` lists X's own words too
