"""What a busy background process is running, read from the process itself: the
script file an interpreter was started on (``python3 .cache/solver.py``) or the code
it was given (``-c``/``-e``), judged like code a call wrote (``analysis`` features).

The command analysis sees what a call *says*; a program that reached the workspace
without being written through a judged call (decoded, downloaded, unpacked, already
there when the episode started) is only judged here, when it runs in the background
and keeps a core busy. Only one-purpose code counts as mining evidence: a nonce search
(hashing without end) or a Stratum pool client (``analysis.interp``).

The file is read through the process's own view (``/proc/PID/cwd``, ``/proc/PID/root``)
as root, so it is opened without following a final link, without blocking (a FIFO),
only if it is a regular file, and at most ``MAX_BYTES``: the agent controls the path.
Only the features derived from it are kept, never its text.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat

from ..analysis.analyzer import code_features
from ..analysis.decode import decodings
from ..rules.vocabulary import vocabulary

__all__ = ["MAX_BYTES", "mining_code"]

MAX_BYTES = 256 * 1024
_INTERPRETERS = vocabulary()["interpreter_binaries"]
_CODE_FLAGS = {"-c", "-e", "-E", "--eval", "-r"}  # python/perl/ruby/node/php inline code
_EVIDENCE = {"interp_hash_spin": "a nonce search (hashing without end)",
             "interp_stratum": "a Stratum pool client"}


def _args(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(MAX_BYTES)
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def _interpreter(name: str) -> bool:
    base = os.path.basename(name)
    return base in _INTERPRETERS or any(
        base.startswith(i) and base[len(i):].replace(".", "").isdigit()
        for i in ("python", "pypy", "perl", "ruby", "lua", "php", "node"))


def _read_script(pid: int, path: str) -> str | None:
    where = f"/proc/{pid}/root{path}" if path.startswith("/") else f"/proc/{pid}/cwd/{path}"
    return _read_regular(where, os.O_NOFOLLOW)


def _read_regular(where: str, extra_flags: int = 0) -> str | None:
    """A regular file's text from its start, at most MAX_BYTES; None for anything else
    (a FIFO is never waited on: O_NONBLOCK)."""
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | extra_flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return None
        return os.pread(fd, MAX_BYTES, 0).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


# A file name a piece of inline code reads: open('x'), readFileSync("x"), Path('x').
_READ_PATHS = re.compile(r"""(?:open|readFileSync|read_text|read_bytes|Path|File\.read|"""
                         r"""IO\.read|file_get_contents|slurp)\s*\(\s*['"]([^'"\n]{1,200})['"]""")


def _read_stdin(pid: int) -> str | None:
    """The process's standard input when it is a regular file (read from the start)."""
    return _read_regular(f"/proc/{pid}/fd/0")


def mining_code(pid: int) -> str | None:
    """What makes the code process ``pid`` runs a miner's, in words, or None."""
    args = _args(pid)
    if not args or not _interpreter(args[0]):
        return None
    texts: list[tuple[str, str]] = []
    operand = False
    for i, arg in enumerate(args[1:], start=1):
        if arg in _CODE_FLAGS and i + 1 < len(args):
            texts.append(("its inline code", args[i + 1]))
            # code kept in a data file and run by eval/exec (`eval(Buffer.from(
            # readFileSync('w.b64'), 'base64'))`, `exec(open('n.txt').read()[::-1])`)
            for path in _READ_PATHS.findall(args[i + 1])[:4]:
                text = _read_script(pid, path)
                if text is not None:
                    texts.extend((path, t) for t in [text, *decodings(text)])
            operand = True
            break
        if arg == "-":
            break  # the program is read from stdin
        if arg.startswith("-"):
            continue
        text = _read_script(pid, arg)
        if text is not None:
            texts.append((arg, text))
        operand = True
        break  # the first operand is the program; the rest are its arguments
    if not operand:
        # `python3 - < job.dat`, `nohup perl < x`: the program is its stdin's file
        text = _read_stdin(pid)
        if text is not None:
            texts.append(("its standard input", text))
    for where, text in texts:
        with contextlib.suppress(Exception):  # odd code: no evidence, never an error
            feats = code_features(text)
            for feature, what in _EVIDENCE.items():
                if feature in feats:
                    return f"{what} in {where} (pid {pid})"
    return None
