"""Where checkpoints go besides the database: somewhere the writer cannot rewrite.

A checkpoint kept only next to the log it vouches for can be dropped together with
the tail it covers (truncation) or replaced after a rewrite. Shipping each one to a
sink outside the database, and the run's public key with the first one, is what lets
``verify`` detect both. Two sinks: a directory (default ``<state_dir>/checkpoints``,
masked in every sandbox; point it at another disk or mount for real separation) and
an HTTP endpoint (a trainer driver, object store gateway or witness).

Directory layout: ``<root>/<run stem>/run.json`` (run id, public key) and one
``<size, 16 digits>.cp`` note per checkpoint, each written to a temporary name,
fsynced and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .checkpoint import Checkpoint
from .errors import AuditError

__all__ = [
    "CheckpointSink",
    "DirectorySink",
    "ExternalRun",
    "HttpSink",
    "read_external",
]


class CheckpointSink(Protocol):
    """Receives the run's public key once and then every signed checkpoint.
    Raising AuditError from either method fails the append that triggered it."""

    def publish_key(self, stem: str, run_id: str, public_key_b64: str) -> None: ...

    def publish(self, stem: str, checkpoint: Checkpoint) -> None: ...


def _atomic_write(path: Path, data: bytes) -> None:
    # per writing thread: two trails of one run in one process may export the same
    # checkpoint size at once, and must not rename each other's temporary file away
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class DirectorySink:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def publish_key(self, stem: str, run_id: str, public_key_b64: str) -> None:
        run_dir = self.root / stem
        meta = run_dir / "run.json"
        try:
            run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if meta.exists():
                known = json.loads(meta.read_text())
                if known.get("public_key") != public_key_b64:
                    raise AuditError(
                        f"checkpoint sink {run_dir} already pins another key for run {run_id}"
                    )
                return
            payload = {"run_id": run_id, "public_key": public_key_b64, "key_type": "ed25519"}
            _atomic_write(meta, json.dumps(payload, sort_keys=True).encode() + b"\n")
        except OSError as exc:
            raise AuditError(f"cannot write to checkpoint sink {run_dir}: {exc}") from exc

    def publish(self, stem: str, checkpoint: Checkpoint) -> None:
        path = self.root / stem / f"{checkpoint.size:016d}.cp"
        try:
            _atomic_write(path, checkpoint.note().encode())
        except OSError as exc:
            raise AuditError(f"cannot export checkpoint to {path}: {exc}") from exc


class HttpSink:
    """POSTs JSON ``{"run": stem, "run_id", "public_key"}`` once and then
    ``{"run": stem, "size", "note"}`` per checkpoint; any non-2xx answer fails closed."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def _post(self, payload: dict[str, object]) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AuditError(f"checkpoint sink {self.url} refused the checkpoint: {exc}") from exc

    def publish_key(self, stem: str, run_id: str, public_key_b64: str) -> None:
        self._post({"run": stem, "run_id": run_id, "public_key": public_key_b64})

    def publish(self, stem: str, checkpoint: Checkpoint) -> None:
        self._post({"run": stem, "size": checkpoint.size, "note": checkpoint.note()})


@dataclass
class ExternalRun:
    """What a sink holds for one run: the pinned key (if published) and the notes."""

    stem: str
    public_key_b64: str | None = None
    notes: list[tuple[str, str]] = field(default_factory=list)  # (where, note text)


def read_external(path: str | os.PathLike[str]) -> dict[str, ExternalRun]:
    """Read exported checkpoints from a note file, a run directory or a sink root,
    keyed by run stem (taken from each note's origin line)."""
    root = Path(path)
    runs: dict[str, ExternalRun] = {}

    def add_note(file: Path) -> None:
        text = file.read_text(errors="replace")
        origin = text.split("\n", 1)[0]
        stem = origin.split("/", 1)[1] if origin.startswith("bastion.audit/") else origin
        runs.setdefault(stem, ExternalRun(stem)).notes.append((str(file), text))

    try:
        if root.is_file():
            add_note(root)
            return runs
        if not root.is_dir():
            raise AuditError(f"no checkpoint file or directory at {root}")
        run_dirs = [root] if (root / "run.json").exists() else sorted(
            p for p in root.iterdir() if p.is_dir())
        for run_dir in run_dirs:
            meta = run_dir / "run.json"
            if meta.exists():
                data = json.loads(meta.read_text())
                run = runs.setdefault(run_dir.name, ExternalRun(run_dir.name))
                run.public_key_b64 = data.get("public_key")
            for note in sorted(run_dir.glob("*.cp")):
                add_note(note)
    except OSError as exc:
        raise AuditError(f"cannot read exported checkpoints at {root}: {exc}") from exc
    return runs
