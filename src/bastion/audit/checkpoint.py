"""Signed checkpoints: a commitment to (size, head) in the C2SP signed-note format.

    bastion.audit/<run>            origin (names the log, so a note cannot be moved
    12000                          between runs), tree size, base64 head, and one
    q0C1...=                       extension line with the signing time
    time 1764283200123

    — bastion.audit/<run> <base64(key hash[4] || Ed25519 signature[64])>

The signature covers the whole body, so a checkpoint is bound to its position (size)
as well as its head: the lesson of journald's CVE-2023-31439, where seals were not
bound to their epoch and could be replayed. The key hash tells "signed by some other
key" (wrong key) apart from "a signature that does not verify" (forged).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from .keys import RunKey, key_id, verify_signature

__all__ = ["Checkpoint", "origin_for"]

_DASH = "\u2014"


def origin_for(stem: str) -> str:
    return f"bastion.audit/{stem}"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    head: bytes
    time_ms: int
    key_name: str
    key_hash: bytes
    signature: bytes

    @property
    def body(self) -> bytes:
        head = base64.b64encode(self.head).decode()
        return f"{self.origin}\n{self.size}\n{head}\ntime {self.time_ms}\n".encode()

    def note(self) -> str:
        sig = base64.b64encode(self.key_hash + self.signature).decode()
        return self.body.decode() + f"\n{_DASH} {self.key_name} {sig}\n"

    @classmethod
    def sign(cls, origin: str, size: int, head: bytes, key: RunKey) -> Checkpoint:
        unsigned = cls(origin, size, head, int(time.time() * 1000), origin, b"", b"")
        return cls(
            origin, size, head, unsigned.time_ms, origin,
            key_id(origin, key.public), key.sign(unsigned.body),
        )

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a note. Raises ValueError naming what is malformed."""
        body, sep, sigs = text.partition("\n\n")
        if not sep:
            raise ValueError("not a signed note (no blank line before the signature)")
        lines = body.split("\n")
        if len(lines) < 4 or not lines[3].startswith("time "):
            raise ValueError("checkpoint body must be origin, size, head, time")
        origin, size_text, head_text, time_text = lines[:4]
        if not size_text.isdigit():
            raise ValueError(f"bad tree size {size_text!r}")
        head = base64.b64decode(head_text, validate=True)
        if len(head) != 32:
            raise ValueError("head is not 32 bytes")
        sig_line = sigs.strip("\n").split("\n")[0]
        parts = sig_line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise ValueError("malformed signature line")
        raw = base64.b64decode(parts[2], validate=True)
        if len(raw) != 4 + 64:
            raise ValueError("signature is not key hash + 64-byte Ed25519 signature")
        return cls(origin, int(size_text), head, int(time_text[5:]), parts[1], raw[:4], raw[4:])

    def problem(self, public_key: bytes) -> str | None:
        """None if ``public_key`` signed this checkpoint; else ``"wrong key"`` (signed
        under another key) or ``"forged signature"`` (claims our key, does not verify)."""
        if self.key_name != self.origin or self.key_hash != key_id(self.key_name, public_key):
            return "wrong key"
        if not verify_signature(public_key, self.signature, self.body):
            return "forged signature"
        return None
