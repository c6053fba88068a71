"""Programs that embed an interpreter and take its code on the command line or in a file.

gdb runs Python (``gdb -batch -ex 'python CODE'``, ``-ex 'pi CODE'``, ``-x f.py``,
``-ex 'source f.py'``, a command file's ``python ... end`` block) and shell commands
(``-ex 'shell CMD'``, ``-ex '!CMD'``) inside its own process: no python3 or sh process
is ever exec'd, so neither the command-name rules nor the exec sensor see the code.
The code is judged as what it is: ``hosted_programs`` returns the argv an interpreter
would have been given for the same code (``["python3", "-c", CODE]``), which the
analyser judges like a typed command.

The dynamic loader is such a host for programs: ``ld-linux-x86-64.so.2 PROG ARGS``
maps and runs PROG (``loader_program``) with no exec of PROG's own path, so a program
kept on a noexec mount, or renamed, runs unseen by the exec of a file by its name.

Only hosts installed where sessions run and plausible for an agent are listed (vim
here is built without +python3/+perl/+lua: its ``:!`` and ``system()`` are shell escapes,
judged as such by the analyser).
"""

from __future__ import annotations

import re

from ..rules.vocabulary import vocabulary

__all__ = ["CODE_HOSTS", "hosted_programs", "loader_program"]

CODE_HOSTS = vocabulary()["code_host_binaries"]
# gdb options whose value is a gdb command, and those whose value is a command file
_GDB_COMMAND = ("-ex", "--ex", "-eval-command", "--eval-command", "-iex", "--iex",
                "-init-eval-command", "--init-eval-command")
_GDB_FILE = ("-x", "--x", "-command", "--command", "-ix", "--ix", "-init-command", "--init-command")
_PY = re.compile(r"^\s*(?:python|python-interactive|py|pi)(?:\s+(.+)|\s*\n(.*?)(?:\n\s*end\s*)?)$", re.DOTALL)
_SHELL = re.compile(r"^\s*(?:shell\s+|!\s*)(.+)$", re.DOTALL)
_SOURCE = re.compile(r"^\s*source\s+(?:-[sv]\s+)*(\S+)\s*$")
_MAX_ITEMS = 32


def _gdb_command(cmd: str) -> list[str] | None:
    """The interpreter argv a gdb command runs, if it runs code."""
    m = _PY.match(cmd)
    if m:
        code = m.group(1) or m.group(2) or ""
        return ["python3", "-c", code] if code.strip() else None
    m = _SHELL.match(cmd)
    if m:
        return ["sh", "-c", m.group(1)]
    m = _SOURCE.match(cmd)
    if m:
        return ["python3", m.group(1)]  # a .py runs as python; a command file's blocks likewise
    return None


def hosted_programs(name: str, argv: list[str]) -> list[list[str]]:
    """The interpreter argvs that ``argv`` (a host program, see CODE_HOSTS) runs inside
    itself: each inline program and each script file given to it. Empty for any other
    program and for a host given no code (``gdb -batch -ex bt ./core``)."""
    if name not in CODE_HOSTS:
        return []
    out: list[list[str]] = []
    args = argv[1:]
    i = 0
    while i < len(args) and len(out) < _MAX_ITEMS:
        a = args[i]
        if a in ("--args", "-args"):
            break  # the rest is the debugged program's own argv
        value: str | None = None
        opt = a
        if "=" in a and a.startswith("-"):
            opt, value = a.split("=", 1)
        elif a in _GDB_COMMAND or a in _GDB_FILE:
            value = args[i + 1] if i + 1 < len(args) else None
            i += 1
        i += 1
        if value is None:
            continue
        if opt in _GDB_COMMAND:
            sub = _gdb_command(value)
            if sub is not None:
                out.append(sub)
        elif opt in _GDB_FILE:
            out.append(["python3", value])  # a command file or a .py: its code runs
    return out


# ld.so, ld-linux.so.2, ld-linux-x86-64.so.2, ld-linux-aarch64.so.1, ld64.so.2,
# ld-musl-x86_64.so.1: the loader, by any path
_LOADER = re.compile(r"^ld(?:-linux(?:-[\w-]+)?|64|-musl-[\w-]+)?\.so(?:\.\d+)*$")
# options that print or check and run nothing (ldd runs the loader with these)
_LOADER_INERT = frozenset({"--list", "--verify", "--help", "--version", "--list-tunables",
                           "--list-diagnostics"})
_LOADER_VALUE = frozenset({"--library-path", "--inhibit-rpath", "--audit", "--preload", "--argv0",
                           "--glibc-hwcaps-prepend", "--glibc-hwcaps-mask"})


def loader_program(name: str, argv: list[str]) -> list[str] | None:
    """The argv the dynamic loader runs (its first operand is the program, the rest its
    arguments; ``--argv0 NAME`` is only what the program is told its name is), or None
    when ``name`` is not the loader or it is asked to list, verify or print."""
    if not _LOADER.match(name):
        return None
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        opt = a.split("=", 1)[0]
        if opt in _LOADER_INERT:
            return None
        if a == "--":
            i += 1
            break
        if opt in _LOADER_VALUE:
            i += 1 if "=" in a else 2
            continue
        if a.startswith("--"):
            i += 1  # --inhibit-cache and future flags
            continue
        break
    return args[i:] or None
