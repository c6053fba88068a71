"""Text written by the agent, shown on a terminal: one escaping rule for every place
that prints it (the audit report, the one-shot CLI). Standard library only, so that the
one-shot path can import it without loading anything else."""

from __future__ import annotations

__all__ = ["plain"]


def plain(value: object) -> str:
    """``value`` as text that cannot start a line or move the cursor: control and other
    non-printable characters are escaped (``\\x1b``, ``\\u2028``)."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in text)
