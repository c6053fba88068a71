"""Git hooks judged by what they run, not by where they are.

A hook in the agent's own repository is ordinary developer set-up when it runs the
project's checks (``ruff``, ``black --check``, ``pytest -q``, ``npm test``): git runs it
only when someone commits in that workspace, and whatever it starts then is watched
like any other process. It is persistence when what it runs is something the policy
would stop if the agent typed it now (a fetch piped to a shell, a connection back, a
credential read, another persistence location), or something that outlives the git
command (a background job) or hides (a program under /tmp or a dot-directory).

So a hook's text is judged as the command it is: shell text as shell, a ``#!``
interpreter's body as that interpreter's inline code, through the same analyser and
the default rule packs a typed command goes through. Content that cannot be judged
(binary, an interpreter we do not read, unparseable shell) counts: fail closed.
"""

from __future__ import annotations

import functools
import re
import shlex
from typing import Any

__all__ = ["hook_runs_code"]

# The severity from which a matched rule makes a hook persistence (low rules are
# observations: a `find`, a `ps`).
_STOPPING = ("medium", "high", "critical")
# A shebang's interpreter -> the option that takes its program as an argument.
_INLINE_OPTION = {"python": "-c", "perl": "-e", "ruby": "-e", "node": "-e", "nodejs": "-e",
                  "php": "-r"}
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"})
_BACKGROUND = re.compile(r"(?<![&>|<])&(?![&>])|\b(?:nohup|setsid|disown|daemonize)\b")
_HIDDEN = re.compile(r"(?:^|[\s;|&(`'\"=])(?:/tmp/|/dev/shm/|/var/tmp/|/run/user/|"
                     r"(?:\S*/)?\.(?!git/|/|\s)[\w.-]+/)\S*")


def _interpreter(text: str) -> tuple[str, str]:
    """(interpreter family, program text) from the hook's ``#!`` line; ``sh`` without one
    (git runs a hook with no shebang through /bin/sh)."""
    first, _, body = text.partition("\n")
    if not first.startswith("#!"):
        return "sh", text
    words = first[2:].split()
    if not words:
        return "sh", body
    name = words[0].rsplit("/", 1)[-1]
    if name == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        name = rest[0] if rest else ""
    family = re.sub(r"[\d.]+$", "", name)
    return family, body


@functools.lru_cache(maxsize=1)
def _ruleset() -> Any:
    from ..policy import Policy
    from ..rules import load_ruleset
    return load_ruleset(Policy.default())


def _stopped(command: str) -> bool:
    """Would the default policy act on ``command`` typed as a tool call?"""
    from ..events import Event, EventKind
    from .analyzer import analyze_command
    fields = analyze_command(command)
    if fields["cmd.parse_error"] or fields["cmd.hosts"] or fields["cmd.urls"] \
            or fields["cmd.persists"]:
        return True  # unjudgeable, talks to the network, or plants more
    matches = _ruleset().match(Event(kind=EventKind.COMMAND, fields=fields))
    return any(str(m.severity) in _STOPPING for m in matches)


def hook_runs_code(text: str) -> bool:
    """True when the hook ``text`` is persistence (see the module docstring)."""
    if "\0" in text:
        return True  # a compiled program: nothing to judge it by
    family, body = _interpreter(text)
    if not body.strip():
        return False
    if family in _SHELLS:
        if _BACKGROUND.search(body) or _HIDDEN.search(body):
            return True
        return _stopped(body)
    option = _INLINE_OPTION.get(family)
    if option is None:
        return True  # an interpreter whose code we do not read
    return _stopped(shlex.join([family if family != "python" else "python3", option, body]))
