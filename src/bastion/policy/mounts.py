"""``sandbox.mounts``: extra host directories a session sees (datasets, caches).

Each is a bind of a host path at a path inside the sandbox, read-only unless
``mode: rw``. Validated when the policy loads: both paths absolute and normalised,
the target not one of the trees bastion builds itself (``/``, ``/proc``, ``/dev``,
``/sys``, ``/tmp``, the supervisor's ``/.bastion``) nor the workspace. That the source
is not bastion's state directory is checked when the sandbox is built (the state
directory is not known to the policy).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import field_validator

from ._base import Section

__all__ = ["RESERVED_TARGETS", "Mount"]

RESERVED_TARGETS = ("/proc", "/dev", "/sys", "/tmp", "/.bastion", "/workspace")


def _absolute(value: str, what: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{what} must be an absolute path, not {value!r}")
    norm = os.path.normpath(value)
    if norm != (value.rstrip("/") or "/") or ".." in value.split("/"):
        raise ValueError(f"{what} must be a normalised path (got {value!r}, meaning {norm!r})")
    return norm


class Mount(Section):
    source: str  # host path
    target: str  # path inside the sandbox
    mode: Literal["ro", "rw"] = "ro"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return _absolute(value, "source")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        norm = _absolute(value, "target")
        if norm == "/":
            raise ValueError("target cannot be / (use sandbox.rootfs or sandbox.image)")
        for reserved in RESERVED_TARGETS:
            if norm == reserved or norm.startswith(reserved + "/"):
                raise ValueError(f"target {norm} is inside {reserved}, which bastion builds")
        return norm
