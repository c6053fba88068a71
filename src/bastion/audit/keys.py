"""One Ed25519 signing key per run, readable only by root.

The private key lives in ``<state_dir>/keys/<run>.ed25519`` (PKCS#8 PEM, mode 0600,
created with O_EXCL so two writer processes of one run end up sharing one key). The
public key goes into the run's metadata and, separately, to the checkpoint sink, which
is where a verifier should pin it from: a key read from the database itself can be
replaced along with everything else in the database.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import AuditError

__all__ = ["RunKey", "key_id", "public_key_from_b64", "verify_signature"]


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash of a C2SP signed-note Ed25519 key (name, 0x0A, 0x01, key)."""
    return hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


def public_key_from_b64(text: str) -> bytes:
    raw = base64.b64decode(text.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class RunKey:
    """A run's signing key. ``public`` is the raw 32-byte public key."""

    private: Ed25519PrivateKey
    public: bytes
    path: Path

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    @classmethod
    def load_or_create(cls, keys_dir: Path, stem: str) -> RunKey:
        path = keys_dir / f"{stem}.ed25519"
        try:
            return cls.load(path)
        except FileNotFoundError:
            pass
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # atomic create-if-absent, full content or nothing
            except FileExistsError:
                return cls.load(path)  # another writer of this run won the race
            finally:
                os.unlink(tmp)
            _fsync_dir(keys_dir)
        except OSError as exc:
            raise AuditError(f"cannot create the run's signing key {path}: {exc}") from exc
        return cls(private, _raw_public(private), path)

    @classmethod
    def load(cls, path: Path) -> RunKey:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise AuditError(f"cannot read the run's signing key {path}: {exc}") from exc
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise AuditError(f"signing key {path} is readable by others (mode {mode:o})")
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise AuditError(f"{path} is not an Ed25519 key")
        return cls(private, _raw_public(private), path)


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
