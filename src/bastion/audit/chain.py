"""Record encoding and the hash chain (RFC 6962-style domain separation).

A record is stored as the exact bytes that are hashed: canonical JSON whose first key
is ``seq`` and whose remaining keys are sorted (compact separators, UTF-8; orjson,
which writes NaN and infinities as null and refuses integers beyond 64 bits). The
verifier never re-encodes: it hashes the stored bytes, so the encoder's exact output
only has to be deterministic, not reproducible by other implementations. Putting ``seq`` first lets producers serialise a record before its position
is known (the writer assigns ``seq`` inside the commit transaction, which keeps several
writer processes on one run consistent) and lets the verifier read a record's claimed
position without parsing the whole body when it diagnoses reordering or insertion.

    leaf_i    = SHA-256(0x00 || body_i)
    head_i    = SHA-256(0x01 || head_{i-1} || leaf_i)
    head_{-1} = SHA-256(0x02 || "bastion-audit/1" || 0x00 || run_id || 0x00 || public key)

The distinct prefixes keep a leaf from ever being confused with a head (the second
pre-image trick that RFC 6962 §2.1 guards against), and the genesis head binds the
chain to its run and signing key, so a chain cannot be transplanted to another run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "FORMAT",
    "claimed_seq",
    "encode_body",
    "encode_rest",
    "genesis_head",
    "leaf_hash",
    "next_head",
]

FORMAT = "bastion-audit/1"

_sha256 = hashlib.sha256
_OPTIONS = orjson.OPT_SORT_KEYS
_SEQ_RE = re.compile(rb'^\{"seq":(\d{1,19})[,}]')


def encode_rest(record: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a record without its ``seq`` (what producers can do early)."""
    if "seq" in record:
        raise ValueError("the writer assigns seq")
    try:
        return orjson.dumps(record, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise ValueError(str(exc)) from exc


def encode_body(seq: int, rest: bytes) -> bytes:
    """The stored and hashed bytes: ``{"seq":N,`` followed by the rest's keys."""
    if rest == b"{}":
        return b'{"seq":%d}' % seq
    return b'{"seq":%d,%s' % (seq, rest[1:])


def claimed_seq(body: bytes) -> int | None:
    """The position a body says it holds, or None if it is not a well-formed body."""
    match = _SEQ_RE.match(body)
    return int(match.group(1)) if match else None


def leaf_hash(body: bytes) -> bytes:
    return _sha256(b"\x00" + body).digest()


def next_head(prev: bytes, leaf: bytes) -> bytes:
    return _sha256(b"\x01" + prev + leaf).digest()


def genesis_head(run_id: str, public_key: bytes) -> bytes:
    return _sha256(
        b"\x02" + FORMAT.encode() + b"\x00" + run_id.encode() + b"\x00" + public_key
    ).digest()
