"""What a busy background process is running, read from the process itself: the
script file an interpreter was started on (``python3 .cache/solver.py``) or the code
it was given (``-c``/``-e``), judged like code a call wrote (``analysis`` features).

The command analysis sees what a call *says*; a program that reached the workspace
without being written through a judged call (decoded, downloaded, unpacked, already
there when the episode started) is only judged here, when it runs in the background
and keeps a core busy. Only one-purpose code counts as mining evidence: a nonce search
(hashing without end) or a Stratum pool client (``analysis.interp``).

A process that rewrote its title (node ``process.title``, perl ``$0``, setproctitle)
no longer names its program or script in /proc/PID/cmdline: its program is its exe,
and its script is read from the command line it was started with (the process
sensor's exec record, inherited by a process forked after it). A title that names
another compiled program than the interpreter running (``make -j2`` on perl) is
hiding, which only code that should not run needs: it is evidence by itself.

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
from ..analysis.stratum import STRATUM_METHOD
from ..rules.vocabulary import vocabulary
from .identity import family
from .process import launched

__all__ = ["MAX_BYTES", "mining_code"]

MAX_BYTES = 256 * 1024
_INTERPRETERS = vocabulary()["interpreter_binaries"]
_CODE_FLAGS = {"-c", "-e", "-E", "--eval", "-r"}  # python/perl/ruby/node/php inline code
_EVIDENCE = {"interp_hash_spin": "a nonce search (hashing without end)",
             "interp_stratum": "a Stratum pool client"}


# an HTTP client the analysis' interp_http does not name (node's http(s).request)
_HTTP_CLIENT = re.compile(r"\bhttps?\.request\s*\(")


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


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


_PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _dressed_as(pid: int, name: str, exe: str) -> str | None:
    """The program file the title ``name`` of interpreter process ``pid`` names, when
    that is another compiled program than the one running (``$0 = "make -j2"`` on
    perl): hiding what runs. A title naming the interpreter itself, a script (an entry
    point the interpreter runs: ``gunicorn: master``) or nothing that exists (``celeryd``,
    ``tsserver``) is no claim to be another program."""
    base = name.lstrip("-").rstrip(":")
    if not base or base.startswith("[") or family(base) == family(os.path.basename(exe)):
        return None
    paths = [base] if base.startswith("/") else [] if "/" in base else [
        f"{d}/{base}" for d in _PATH_DIRS]
    try:
        running = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    for path in paths:
        try:  # opened in the process's own root, never waited on, regular files only
            fd = os.open(f"/proc/{pid}/root{path}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            if os.pread(fd, 4, 0) != b"\x7fELF":
                return None  # a script: run by an interpreter, maybe this one
            if (st.st_dev, st.st_ino) == (running.st_dev, running.st_ino):
                return None
            return path
        except OSError:
            continue
        finally:
            os.close(fd)
    return None


def _texts(pid: int, args: list[str]) -> list[tuple[str, str]]:
    """The code an interpreter started with ``args`` runs: its script, its inline
    code (and the data files that code reads), or its standard input's file."""
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
    return texts


def mining_code(pid: int) -> str | None:
    """What makes the code process ``pid`` runs a miner's, in words, or None.

    A process may have rewritten its title since it started (node ``process.title``,
    perl ``$0``, setproctitle): /proc/PID/cmdline then names neither its program nor
    its script. Its program is its exe; its script is read from the command line it
    was started with (kept by the process sensor from its exec, or its parent's when
    it was forked after). A title that names another compiled program than the
    interpreter running (``make -j2`` on perl) is itself evidence: only code that
    should not run needs to hide what it is."""
    args = _args(pid)
    if not args:
        return None
    title = args[0].split() if len(args) == 1 and " " in args[0] else args
    exe = _exe(pid)
    runs_interpreter = bool(exe) and _interpreter(exe)
    if not _interpreter(title[0]):
        if not runs_interpreter:
            return None
        other = _dressed_as(pid, title[0], exe)
        if other is not None:
            return (f"a {family(os.path.basename(exe))} process titled {' '.join(title)[:60]!r},"
                    f" dressed as another program ({other}) (pid {pid})")
    candidates = [title] if _interpreter(title[0]) else []
    if runs_interpreter:
        start = launched(pid)
        if start is not None and start[1] and list(start[1]) != title and (
                _interpreter(start[1][0]) or _interpreter(start[0])):
            candidates.append(list(start[1]))
    for argv in candidates:
        for where, text in _texts(pid, argv):
            with contextlib.suppress(Exception):  # odd code: no evidence, never an error
                feats = code_features(text)
                for feature, what in _EVIDENCE.items():
                    if feature in feats:
                        return f"{what} in {where} (pid {pid})"
                if ("interp_http" in feats or _HTTP_CLIENT.search(text)) and \
                        STRATUM_METHOD.search(text):
                    # the pool protocol's methods as JSON-RPC over HTTP(S): a pool client
                    # however it is carried (the gateway sees Stratum only in clear text)
                    return f"a mining pool client over HTTP in {where} (pid {pid})"
    return None
