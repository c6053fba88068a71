"""The node daemon's wire format: one JSON object per line over a unix stream socket.

A request is ``{"id": n, "op": ..., ...}``; its answer ``{"id": n, "ok": true, ...}``
or ``{"id": n, "ok": false, "error": {"type": ..., "message": ...}}``. The first request
of a connection must be ``hello`` with the protocol version and a token; anything else
is answered with an error and the connection is closed. Bytes (stdin, file contents)
travel base64-encoded under a ``*_b64`` key; text output travels as JSON strings
(undecodable bytes as lone surrogates, which JSON carries).

Where the daemon of a state directory listens is written in ``<state>/node/address``
(a unix socket path: socket paths are limited to 107 bytes, and a state directory can
be deeper than that, so the socket itself lives in a short directory). Its tokens are
in ``<state>/node/`` too, readable by root only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import (
    BastionError,
    InternalError,
    PolicyError,
    SandboxUnavailable,
    SessionBroken,
    SessionClosed,
)

__all__ = [
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "NodeAddress",
    "NotAuthorized",
    "ProtocolError",
    "b64",
    "decode_frame",
    "encode_frame",
    "error_from_wire",
    "error_to_wire",
    "unb64",
]

PROTOCOL_VERSION = 1
MAX_FRAME = 256 * 1024 * 1024  # one request or answer; files and outputs are bounded below it


class ProtocolError(BastionError):
    """A peer sent something that is not this protocol (bad JSON, an unknown op, ...)."""


class NotAuthorized(BastionError):
    """A bad or missing token, or a run token used for another run."""


_ERRORS: dict[str, type[BastionError]] = {
    cls.__name__: cls
    for cls in (BastionError, InternalError, PolicyError, SandboxUnavailable, SessionBroken,
                SessionClosed, ProtocolError, NotAuthorized)
}


def error_to_wire(exc: BaseException) -> dict[str, str]:
    kind = type(exc).__name__ if type(exc).__name__ in _ERRORS else "InternalError"
    return {"type": kind, "message": str(exc) or type(exc).__name__}


def error_from_wire(data: dict[str, Any]) -> BastionError:
    cls = _ERRORS.get(str(data.get("type")), InternalError)
    message = str(data.get("message", "error"))
    if cls is PolicyError:
        return PolicyError(message)
    return cls(message)


def encode_frame(obj: dict[str, Any]) -> bytes:
    # ensure_ascii: lone surrogates (undecodable output bytes) survive the round trip
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def decode_frame(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not a JSON frame: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a frame is a JSON object")
    return obj


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("expected a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ProtocolError("not valid base64") from None


@dataclass(frozen=True)
class NodeAddress:
    """Where one state directory's daemon keeps its socket, tokens and lock."""

    state_root: Path

    @property
    def dir(self) -> Path:
        return self.state_root / "node"

    @property
    def address_file(self) -> Path:
        return self.dir / "address"

    @property
    def token_file(self) -> Path:
        return self.dir / "token"

    @property
    def lock_file(self) -> Path:
        return self.dir / "lock"

    def socket_path(self) -> Path:
        """A fresh, short socket path for this state directory (the daemon's choice)."""
        digest = hashlib.sha256(os.fsencode(self.state_root)).hexdigest()[:16]
        base = Path("/run/bastion") if os.access("/run", os.W_OK) else Path(
            tempfile.gettempdir()) / "bastion"
        return base / f"node-{digest}.sock"

    def published_socket(self) -> Path | None:
        """The socket a running daemon published, if any."""
        try:
            text = self.address_file.read_text().strip()
        except OSError:
            return None
        return Path(text) if text else None

    def read_token(self) -> str | None:
        try:
            return self.token_file.read_text().strip() or None
        except OSError:
            return None
