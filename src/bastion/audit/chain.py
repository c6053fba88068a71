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

import base64
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
    "raw_bytes_of",
]

FORMAT = "bastion-audit/1"

_sha256 = hashlib.sha256
_OPTIONS = orjson.OPT_SORT_KEYS
_SEQ_RE = re.compile(rb'^\{"seq":(\d{1,19})[,}]')


def encode_rest(record: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a record without its ``seq`` (what producers can do early).

    Text that is not valid Unicode (a command given as bytes that are not UTF-8,
    decoded with ``surrogateescape``) cannot be JSON: each such string is stored as
    its readable form (undecodable bytes written ``\\xNN``) and its exact bytes are
    kept beside it, base64, under the top-level key ``raw_bytes`` (JSON pointer ->
    bytes), so the record is faithful and ``raw_bytes_of`` gives the original back.
    """
    if "seq" in record:
        raise ValueError("the writer assigns seq")
    try:
        return orjson.dumps(record, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raw: dict[str, str] = {}
        clean = _escape_undecodable(record, "", raw)
        if not raw:
            raise ValueError(str(exc)) from exc
        try:
            return orjson.dumps({**clean, "raw_bytes": raw}, option=_OPTIONS)
        except orjson.JSONEncodeError as exc2:
            raise ValueError(str(exc2)) from exc2


def _escape_undecodable(value: Any, pointer: str, raw: dict[str, str]) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            data = value.encode("utf-8", "surrogateescape") if _escapable(value) \
                else value.encode("utf-8", "surrogatepass")
            raw[pointer or "/"] = base64.b64encode(data).decode()
            return data.decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping):
        return {k: _escape_undecodable(v, f"{pointer}/{_token(k)}", raw)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_undecodable(v, f"{pointer}/{i}", raw) for i, v in enumerate(value)]
    return value


def _escapable(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _token(key: object) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def raw_bytes_of(record: Mapping[str, Any], pointer: str) -> bytes | None:
    """The exact bytes of a string the encoder had to escape (see ``encode_rest``)."""
    raw = record.get("raw_bytes")
    if not isinstance(raw, Mapping) or pointer not in raw:
        return None
    return base64.b64decode(raw[pointer])


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
