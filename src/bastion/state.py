"""bastion's state directory: audit data, keys, workspaces, quarantined sessions.

Resolved from, in order: an explicit argument (``--state-dir``), ``BASTION_STATE_DIR``,
``/var/lib/bastion``. Sessions never see it (it is masked inside every sandbox), and
its sensitive parts are readable by root only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import SandboxUnavailable

__all__ = ["DEFAULT_STATE_DIR", "StateDir", "check_traversable"]

DEFAULT_STATE_DIR = "/var/lib/bastion"


def check_traversable(path: Path, what: str) -> None:
    """bubblewrap binds each workspace as the session's unprivileged uid, so every
    directory above a workspace must be traversable by others."""
    for parent in path.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise SandboxUnavailable(
                f"{what} {path} is unusable: {parent} is not traversable by sandbox users "
                f"(chmod o+x {parent}, or choose a directory such as /var/lib/bastion)"
            )


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def resolve(cls, explicit: str | os.PathLike[str] | None = None) -> StateDir:
        raw = explicit or os.environ.get("BASTION_STATE_DIR") or DEFAULT_STATE_DIR
        root = Path(raw).absolute()
        state = cls(root)
        state.ensure()
        return state

    def ensure(self) -> None:
        try:
            # 0711: sandbox uids may traverse to their own workspace but not list anything
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o711)
            self.sessions.mkdir(exist_ok=True)
            os.chmod(self.sessions, 0o711)
            for private in (self.audit, self.keys, self.quarantine, self.checkpoints):
                private.mkdir(exist_ok=True)
                os.chmod(private, 0o700)
        except OSError as exc:
            raise SandboxUnavailable(
                f"cannot use state directory {self.root}: {exc.strerror}; pass --state-dir "
                "or set BASTION_STATE_DIR to a writable directory"
            ) from exc
        check_traversable(self.root, "state directory")

    @property
    def sessions(self) -> Path:
        return self.root / "sessions"

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"
