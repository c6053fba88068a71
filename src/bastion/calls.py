"""What a caller may hand to ``Session.exec``: checked once, at the choke point.

- Commands are bytes as far as the kernel is concerned. A command given as ``bytes``
  (or an argv with ``bytes`` items) is decoded with ``surrogateescape``, so text that
  is not valid UTF-8 runs as exactly the bytes it was given (``os.fsencode`` restores
  them before ``execve``) and is recorded faithfully by the audit trail
  (``audit/chain.py``).
- ``call_id`` and ``step`` attribute everything a call causes and are printed by
  reports and terminals: a call id is printable text of at most ``MAX_CALL_ID``
  characters (no newline can forge a report line), a step a non-negative integer.
- ``timeout`` is a positive number of seconds; ``None`` means the policy's
  ``exec_timeout``. Zero and negatives are refused with a clear message rather than
  meaning "the default" or "time out at once".
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

__all__ = ["MAX_CALL_ID", "MAX_STEP", "analysable", "check_call", "command_text"]

MAX_CALL_ID = 128
MAX_STEP = 10**9

Command = str | bytes | Sequence[str | bytes]


def _text(part: str | bytes) -> str:
    if isinstance(part, bytes):
        return os.fsdecode(part)  # surrogateescape: undecodable bytes survive
    if isinstance(part, str):
        return part
    raise TypeError(f"a command is text or bytes, not {type(part).__name__}")


def command_text(cmd: Command) -> str | list[str]:
    """The command as text (a shell line) or a list of arguments, bytes decoded."""
    if isinstance(cmd, (str, bytes)):
        text = _text(cmd)
        if "\0" in text:
            raise ValueError("a command cannot contain a NUL byte")
        return text
    argv = [_text(part) for part in cmd]
    if any("\0" in arg for arg in argv):
        raise ValueError("a command argument cannot contain a NUL byte")
    return argv


def analysable(text: str) -> str:
    """The command as the analyzer and the rules see it: valid Unicode, with each
    undecodable byte written ``\\xNN``. Such a byte cannot be part of a name bash
    or the kernel would resolve to anything else, so nothing a rule looks for is lost;
    the exact bytes are in the trail (the ``call_start`` record)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape" if _escapable(text) else "surrogatepass"
                           ).decode("utf-8", "backslashreplace")


def _escapable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def check_call(cmd: Command, *, step: int | None, call_id: str | None,
               timeout: float | None) -> str | list[str]:
    """Validate one call's parameters (raises ValueError/TypeError with what is wrong
    and what is accepted); returns the command with bytes decoded."""
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step must be an integer, not {type(step).__name__}")
        if not 0 <= step <= MAX_STEP:
            raise ValueError(f"step must be between 0 and {MAX_STEP} (got {step})")
    if call_id is not None:
        if not isinstance(call_id, str):
            raise TypeError(f"call_id must be a string, not {type(call_id).__name__}")
        if not call_id or len(call_id) > MAX_CALL_ID:
            raise ValueError(f"call_id must be 1 to {MAX_CALL_ID} characters "
                             f"(got {len(call_id)})")
        if not call_id.isprintable() or call_id != call_id.strip():
            raise ValueError(f"call_id must be printable text without surrounding spaces "
                             f"(got {call_id!r})")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, not "
                            f"{type(timeout).__name__}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds (got {timeout}); "
                             "leave it out for the policy's exec_timeout")
    return command_text(cmd)
