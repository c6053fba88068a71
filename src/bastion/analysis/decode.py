"""Decode literal payloads (base64, hex) when — and only when — they decode to text.

A random token (a hash, an id) is often valid base64 but decodes to binary, so a
decoding only counts when the result is mostly printable text; that keeps a benign
``git checkout 3f2a...`` from turning into a "payload".
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decodings", "looks_like_base64", "try_base64", "try_hex"]

_B64 = re.compile(r"^[A-Za-z0-9+/_-]{8,}={0,2}$")
_HEX = re.compile(r"^(?:\\x|0x)?(?:[0-9a-fA-F]{2}(?:\\x|\s|:)?){4,}$")


def _texty(data: bytes) -> str | None:
    if len(data) < 4:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\n\t\r")
    if printable < 0.95 * len(text):
        return None
    return text


def looks_like_base64(word: str) -> bool:
    w = word.strip()
    return len(w) >= 12 and _B64.match(w) is not None


def try_base64(text: str) -> str | None:
    compact = re.sub(r"\s+", "", text)
    if len(compact) < 8 or not re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", compact):
        return None
    padded = compact + "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            data = base64.urlsafe_b64decode(padded)
        else:
            data = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _texty(data)


def try_hex(text: str) -> str | None:
    compact = text.strip()
    if not _HEX.match(compact):
        return None
    digits = re.sub(r"\\x|0x|[\s:]", "", compact)
    if len(digits) % 2:
        return None
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        return None
    return _texty(data)


def decodings(text: str) -> list[str]:
    """What a data file's text decodes to when code runs it after a transform: base64,
    hex, reversed, rot13 (code kept in a data file is rarely kept as code). The text
    itself is not included."""
    import codecs
    body = text.strip()
    out: list[str] = []
    for decoded in (try_base64("".join(body.split())), try_hex("".join(body.split()))):
        if decoded:
            out.append(decoded)
    out.append(body[::-1])
    out.append(codecs.decode(body, "rot13"))
    return out
