"""Bearer tokens for ``bastion serve``.

Three kinds of principal:

* the **admin** token: reads everything and may act (freeze, terminate, quarantine,
  switch the network phase). One per server.
* **reader** tokens for all runs (``run = "*"``): read everything, including
  ``/metrics``.
* **run** tokens (``run = "<run id>"``): read one run's sessions, episodes, calls,
  events, verdicts, actions and audit status; everything else is hidden (404 for
  another run's episode, filtered out of lists).

Tokens live in ``<state>/serve/tokens.json`` (directory 0700, file 0600, created
atomically with those permissions, root-only like the rest of the state directory).
The file stores SHA-256 digests, not tokens: a token is shown once, when it is
minted. ``BASTION_ADMIN_TOKEN`` / ``--admin-token`` supply an admin token from
outside instead (it is never written down). Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from ..state import StateDir

__all__ = ["ALL_RUNS", "Principal", "TokenStore", "token_digest"]

ALL_RUNS = "*"
_PREFIX = "bst_"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request is: ``name`` is a token's label (never the token itself)."""

    name: str
    admin: bool
    run: str  # ALL_RUNS, or the one run this token may read

    def may_read(self, run_id: str) -> bool:
        return self.admin or self.run == ALL_RUNS or self.run == run_id

    @property
    def all_runs(self) -> bool:
        return self.admin or self.run == ALL_RUNS


class TokenStore:
    """Digests of the tokens this server accepts; reloaded when the file changes, so
    a token minted by ``bastion serve token`` works without a restart."""

    def __init__(self, path: Path, *, admin_token: str | None = None) -> None:
        self.path = path
        self._external_admin = token_digest(admin_token) if admin_token else None
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._entries: list[dict[str, str | bool]] = []

    @classmethod
    def for_state_dir(cls, state: StateDir, *, admin_token: str | None = None) -> TokenStore:
        return cls(state.root / "serve" / "tokens.json", admin_token=admin_token)

    # -- the file ---------------------------------------------------------------------

    def _load(self) -> list[dict[str, str | bool]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._entries, self._mtime = [], None
            return self._entries
        if stat.st_mtime_ns != self._mtime:
            data = json.loads(self.path.read_text())
            self._entries = list(data.get("tokens", []))
            self._mtime = stat.st_mtime_ns
        return self._entries

    def _save(self, entries: list[dict[str, str | bool]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"tokens": entries}, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def mint(self, *, admin: bool = False, run: str = ALL_RUNS, name: str | None = None,
             replace: bool = False) -> str:
        """Create a token, store its digest, return the token (shown once). With
        ``replace``, tokens of the same name are revoked."""
        token = _PREFIX + secrets.token_urlsafe(32)
        label = name or ("admin" if admin else f"read:{run}") + f"-{secrets.token_hex(3)}"
        with self._lock:
            entries = [e for e in self._load() if not (replace and e.get("name") == label)]
            entries.append({"name": label, "digest": token_digest(token), "admin": admin,
                            "run": ALL_RUNS if admin else run})
            self._save(entries)
            self._mtime = None
        return token

    def has_admin(self) -> bool:
        with self._lock:
            return self._external_admin is not None or any(
                e.get("admin") for e in self._load())

    # -- checking ---------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = token_digest(token)
        if self._external_admin is not None and hmac.compare_digest(digest,
                                                                    self._external_admin):
            return Principal("admin (from flag/env)", True, ALL_RUNS)
        with self._lock:
            entries = self._load()
        found: Principal | None = None
        for entry in entries:  # no early exit: the time taken does not depend on which
            if hmac.compare_digest(digest, str(entry.get("digest", ""))):
                found = Principal(str(entry.get("name", "?")), bool(entry.get("admin")),
                                  str(entry.get("run", ALL_RUNS)))
        return found
